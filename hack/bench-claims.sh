#!/usr/bin/env bash
# Time from a SandboxClaim's creation to its Ready condition: warm (a SandboxWarmPool of the
# template keeps ready members) against cold (no pool: the claim gets a new Sandbox). kwok
# nodes, so "cold" is the control plane's and the operator's share of a start, not an image
# pull or a container start.
#
#   bash hack/bench-claims.sh [sandman-binary] [claims]
#
# Defaults: the debug build, 10 claims of each kind, one at a time; medians are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
cargo build --quiet --bins -p sandman -p sandman-testenv
bin="$CARGO_TARGET_DIR/debug"
sandman="${1:-$bin/sandman}"
count="${2:-10}"

dir=$(mktemp -d)
"$bin/testenv" --dir "$dir" up --crds crds >/dev/null
trap '"$bin/testenv" --dir "$dir" down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
export KUBECONFIG="$("$bin/testenv" --dir "$dir" kubeconfig)"
kubectl_bin="$("$bin/testenv" --dir "$dir" build | awk '$1 == "kubectl" { print $2 }')"
kubectl() { "$kubectl_bin" "$@"; }

kubectl create namespace claims >/dev/null
for template in warm cold; do
  cat <<EOF | kubectl apply -f - >/dev/null
apiVersion: sandman.dev/v1alpha1
kind: SandboxTemplate
metadata: { name: $template, namespace: claims }
spec:
  podTemplate:
    spec:
      containers: [{ name: agent, image: registry.example/agent:1 }]
EOF
done
cat <<EOF | kubectl apply -f - >/dev/null
apiVersion: sandman.dev/v1alpha1
kind: SandboxWarmPool
metadata: { name: warm, namespace: claims }
spec: { replicas: 3, sandboxTemplateRef: { name: warm } }
EOF

"$sandman" run --namespace claims --metrics-listen off >"$dir/operator.log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true; "$bin/testenv" --dir "$dir" down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

pool_ready() {
  kubectl wait -n claims sandboxwarmpool/warm --for=jsonpath='{.status.readyReplicas}'=3 --timeout=300s >/dev/null
}
claim() { # name, reference
  local start end
  start=$(date +%s%N)
  cat <<EOF | kubectl apply -f - >/dev/null
apiVersion: sandman.dev/v1alpha1
kind: SandboxClaim
metadata: { name: $1, namespace: claims }
spec: $2
EOF
  kubectl wait -n claims "sandboxclaim/$1" --for=condition=Ready --timeout=300s >/dev/null
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

warm=(); cold=()
for i in $(seq 1 "$count"); do
  pool_ready
  warm+=("$(claim "w$i" '{ warmPoolRef: { name: warm } }')")
  cold+=("$(claim "c$i" '{ sandboxTemplateRef: { name: cold } }')")
done
echo "warm claims (ms): ${warm[*]}"
echo "cold claims (ms): ${cold[*]}"
echo "median claim to Ready over $count: warm $(median "${warm[@]}") ms, cold $(median "${cold[@]}") ms"
