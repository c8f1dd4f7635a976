#!/usr/bin/env bash
# The sandman demo: brings up the local control plane, runs the operator, applies the examples,
# then suspends and resumes a Sandbox while you watch `kubectl get sbx`. Where the machine
# allows it (root, user namespaces), a real node runs an agent under gVisor whose memory is
# kept across suspend; elsewhere that part is skipped with one line that says why.
set -euo pipefail
cd "$(dirname "$0")/.."

source hack/setup.sh
setup_for_demo
cargo build --quiet --bins -p sandman -p sandman-testenv
bin="$CARGO_TARGET_DIR/debug"

# Why memory cannot be kept on this machine, or nothing when it can.
why_no_real_node() {
  if [ "$(id -u)" -ne 0 ]; then echo "not root (real runc and gVisor containers need root)"
  elif ! unshare --user --net --mount true 2>/dev/null; then echo "this kernel refuses new user, network or mount namespaces"
  fi
}
no_real_node="$(why_no_real_node)"
if [ -z "$no_real_node" ]; then
  setup_packages
  "$bin/testenv" up --crds crds --real-nodes 1 --supervisor "$bin/sandman"
else
  "$bin/testenv" up --crds crds
fi
export KUBECONFIG="$("$bin/testenv" kubeconfig)"
kubectl_bin="$("$bin/testenv" build | awk '$1 == "kubectl" { print $2 }')"
kubectl() { "$kubectl_bin" "$@"; }

# Install as a platform team would (CRDs, RBAC, Deployment; kwok runs its pods as fakes), then
# run the operator here with the chart's ServiceAccount identity: the demo proves the RBAC.
kubectl create namespace sandman-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply --server-side --force-conflicts -f deploy/manifests/sandman.yaml >/dev/null
operator_kubeconfig="$(mktemp)"
cp "$KUBECONFIG" "$operator_kubeconfig"
# Impersonation (`as:` in the user entry) needs only the admin's right to impersonate.
sed -i 's/^  user:$/  user:\n    as: system:serviceaccount:sandman-system:sandman/' "$operator_kubeconfig"
echo "the operator runs as system:serviceaccount:sandman-system:sandman (deploy/manifests/sandman.yaml)"

KUBECONFIG="$operator_kubeconfig" "$bin/sandman" run --metrics-listen 127.0.0.1:0 \
  --supervisor-image sandman.dev/supervisor:test >/tmp/sandman-demo.log 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true; rm -f "$operator_kubeconfig"' EXIT

show() { echo; echo "\$ kubectl get sbx,pod,svc,pvc"; kubectl get sbx,pod,svc,pvc; }
# wait_phase PHASE [SANDBOX]
wait_phase() {
  local name="${2:-demo-agent}"
  for _ in $(seq 1 240); do
    [ "$(kubectl get sbx "$name" -o jsonpath='{.status.phase}' 2>/dev/null)" = "$1" ] && return 0
    sleep 0.5
  done
  echo "$name did not reach $1; operator log: /tmp/sandman-demo.log" >&2
  return 1
}

kubectl apply -f examples/sandbox.yaml
wait_phase Running && show

echo; echo "--- suspend: the pod goes, the Service and the volume stay"
kubectl patch sbx demo-agent --type merge -p '{"spec":{"operatingMode":"Suspended"}}'
wait_phase Suspended && show

echo; echo "--- resume: a new pod with the same volume and identity"
kubectl patch sbx demo-agent --type merge -p '{"spec":{"operatingMode":"Running"}}'
wait_phase Running && show

echo; echo "--- a platform policy: untrusted Sandboxes run under gVisor"
cargo build --quiet --release --target wasm32-wasip2 --manifest-path policies/Cargo.toml
wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/untrusted_to_gvisor.wasm"
kubectl create configmap untrusted-to-gvisor --from-file=policy.wasm="$wasm" --dry-run=client -o yaml | kubectl apply -f -
sed "s/SHA256/$(sha256sum "$wasm" | cut -d' ' -f1)/" examples/policy.yaml | kubectl apply -f -
for _ in $(seq 1 60); do
  [ "$(kubectl get sbp untrusted-to-gvisor -o jsonpath='{.status.conditions[0].reason}')" = Loaded ] && break
  sleep 0.5
done
kubectl get sbp
kubectl apply -f examples/untrusted-agent.yaml
for _ in $(seq 1 60); do
  [ "$(kubectl get sbx untrusted-agent -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ] && break
  sleep 0.5
done
kubectl get sbx
kubectl get sbx untrusted-agent -o jsonpath='{.status.decisions}'; echo

echo; echo "--- memory kept: an agent counts in memory under gVisor, is checkpointed to its volume on suspend, and a request wakes it"
if [ -n "$no_real_node" ]; then
  echo "skipped, the demo stays on kwok nodes: $no_real_node"
elif ! kubectl get node real-node-0 >/dev/null 2>&1; then
  echo "skipped: the control plane was already running without a real node (\`$bin/testenv down\`, then run the demo again)"
else
  # The gateway on loopback; a Sandbox's pods are reached in the real node's network.
  gateway_port=18080
  "$bin/sandman" gateway --listen "127.0.0.1:$gateway_port" --metrics-listen off >/tmp/sandman-demo-gateway.log 2>&1 &
  gateway=$!
  trap 'kill $operator $gateway 2>/dev/null || true; rm -f "$operator_kubeconfig"' EXIT
  url="http://127.0.0.1:$gateway_port/sandboxes/default/memory-agent/"
  # The agent's next count; retried while its supervisor is not up yet (the gateway says 502).
  count() {
    for _ in $(seq 1 120); do
      curl -fsS --max-time 60 "$url" 2>/dev/null && return 0
      sleep 0.5
    done
    echo "memory-agent did not answer; logs: /tmp/sandman-demo.log /tmp/sandman-demo-gateway.log" >&2
    return 1
  }
  kubectl apply -f examples/memory-agent.yaml
  wait_phase Running memory-agent
  echo "\$ curl $url  (three times)"; count; count; count
  kubectl patch sbx memory-agent --type merge -p '{"spec":{"operatingMode":"Suspended"}}'
  wait_phase Suspended memory-agent
  kubectl get sbx memory-agent
  echo "checkpoint: $(kubectl get sbx memory-agent -o jsonpath='{.status.checkpoint.outcome} {.status.checkpoint.image}')"
  echo "\$ curl $url  (wakes it; the count goes on)"; count
  for _ in $(seq 1 60); do
    [ "$(kubectl get sbx memory-agent -o jsonpath='{.status.checkpoint.outcome}')" = Restored ] && break
    sleep 0.5
  done
  echo "checkpoint: $(kubectl get sbx memory-agent -o jsonpath='{.status.checkpoint.outcome}')"
fi

echo; echo "--- events"
kubectl get events --field-selector involvedObject.kind=Sandbox --sort-by=.metadata.creationTimestamp

echo
echo "The control plane keeps running: KUBECONFIG=$KUBECONFIG"
echo "Stop it with: $bin/testenv down"
