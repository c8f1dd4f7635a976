#!/usr/bin/env bash
# Idle cost of an operator: CPU seconds used by `sandman run` over a window in which nothing
# happens, with N Ready Sandboxes and, optionally, one CEL policy matching them all.
#
#   bash hack/bench-idle.sh [sandman-binary] [sandboxes] [window-seconds]
#
# Defaults: the debug build, 500 Sandboxes, 60 s. The operator is started after the Sandboxes
# exist, waits until all are Ready, settles for 15 s, then the window is measured from
# /proc/<pid>/stat (utime + stime).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
cargo build --quiet --bins -p sandman -p sandman-testenv
bin="$CARGO_TARGET_DIR/debug"
sandman="${1:-$bin/sandman}"
count="${2:-500}"
window="${3:-60}"

dir=$(mktemp -d)
"$bin/testenv" --dir "$dir" up --crds crds >/dev/null
trap '"$bin/testenv" --dir "$dir" down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
export KUBECONFIG="$("$bin/testenv" --dir "$dir" kubeconfig)"
kubectl_bin="$("$bin/testenv" --dir "$dir" build | awk '$1 == "kubectl" { print $2 }')"
kubectl() { "$kubectl_bin" "$@"; }

kubectl create namespace idle >/dev/null
for i in $(seq 1 "$count"); do
  cat <<EOF
---
apiVersion: sandman.dev/v1alpha1
kind: Sandbox
metadata: { name: idle-$i, namespace: idle }
spec:
  podTemplate:
    spec:
      containers: [{ name: agent, image: registry.example/agent:1 }]
EOF
done | kubectl apply -f - >/dev/null

"$sandman" run --namespace idle --metrics-listen off >"$dir/operator.log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true; "$bin/testenv" --dir "$dir" down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
kubectl wait -n idle sandbox --all --for=jsonpath='{.status.phase}'=Running --timeout=600s >/dev/null
sleep 15

ticks() { awk '{ print $14 + $15 }' "/proc/$operator/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep "$window"
after=$(ticks)
awk -v a="$after" -v b="$before" -v hz="$hz" -v w="$window" -v n="$count" \
  'BEGIN { printf "idle CPU over %ss with %s Ready Sandboxes: %.2f s\n", w, n, (a - b) / hz }'
