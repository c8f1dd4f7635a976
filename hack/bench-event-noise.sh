#!/usr/bin/env bash
# Rejected event writes after test namespaces are deleted: 3 namespaces, each with 20 pods on
# unbound claims (a StorageClass that does not exist) and 20 that no node fits, deleted after
# 30 s; then the API server's count of rejected event writes each minute for 8 minutes.
# Usage: hack/bench-event-noise.sh (builds testenv, starts its own control plane).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
cargo build --quiet -p sandman-testenv --bin testenv
T=$CARGO_TARGET_DIR/debug/testenv
# kubectl from the PATH, else the one testenv built with the control plane.
command -v kubectl >/dev/null || PATH="$(dirname "$(ls -d "$HOME"/.cache/sandman/testenv/v*/kubectl | head -1)"):$PATH"
D=$(mktemp -d)
$T --dir $D up --crds crds >/dev/null
export KUBECONFIG=$($T --dir $D kubeconfig)
rejected() { kubectl get --raw /metrics | { grep '^apiserver_request_total{' || true; } | { grep 'resource="events"' || true; } | { grep -v 'code="20[01]"' || true; } | awk '{s+=$2} END {print s+0}'; }
for r in 1 2 3; do
  kubectl create ns noise-$r >/dev/null
  for i in $(seq 1 20); do
    cat <<YAML | kubectl -n noise-$r apply -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: c$i }
spec: { accessModes: [ReadWriteOnce], storageClassName: missing, resources: { requests: { storage: 1Gi } } }
---
apiVersion: v1
kind: Pod
metadata: { name: p$i }
spec:
  containers: [{ name: a, image: x, volumeMounts: [{ name: w, mountPath: /w }] }]
  volumes: [{ name: w, persistentVolumeClaim: { claimName: c$i } }]
---
apiVersion: v1
kind: Pod
metadata: { name: u$i }
spec:
  nodeSelector: { nope: x }
  containers: [{ name: a, image: x }]
YAML
  done
  sleep 30
  kubectl delete ns noise-$r --wait=false >/dev/null
done
for m in 1 2 3 4 5 6 7 8; do sleep 60; echo "minute $m: rejected event writes so far $(rejected)"; done
kubectl get --raw /metrics | grep '^apiserver_request_total{' | grep 'resource="events"' || true
$T --dir $D down >/dev/null
rm -rf $D
