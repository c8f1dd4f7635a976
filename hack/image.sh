#!/usr/bin/env bash
# Builds a sandman container image without a Docker daemon and pushes it:
#   bash hack/image.sh [registry/repository:tag]             # the operator
#   bash hack/image.sh supervisor [registry/repository:tag]  # the checkpoint supervisor
# A static (musl) release build of `sandman`, an OCI image made with umoci (one layer), pushed
# with skopeo. The operator's image holds the binary as /sandman, user 65532, entrypoint
# `/sandman run`. The supervisor's holds /usr/local/bin/sandman and the pinned runsc
# (tools/runsc, the pure-Go build) as /usr/local/bin/runsc, the paths the operator's
# supervisor command names (src/controller/sandbox/supervisor.rs); give its digest to the
# operator as `--supervisor-image` (Helm: operator.supervisorImage). With no target it starts
# Debian's docker-registry on a loopback port and pushes there.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=operator
if [ "${1:-}" = supervisor ]; then kind=supervisor; shift; fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
need() { command -v "$1" >/dev/null 2>&1; }
if ! need umoci || ! need skopeo || ! need musl-gcc; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq umoci skopeo musl-tools >/dev/null
fi
rustup target add x86_64-unknown-linux-musl wasm32-wasip2 >/dev/null

echo "==> static release build (features: ${SANDMAN_FEATURES:-none}; SANDMAN_FEATURES=otel for traces)"
cargo build --release --locked --target x86_64-unknown-linux-musl --bin sandman --features "${SANDMAN_FEATURES:-}"
binary="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/sandman"
file "$binary" | grep -qE "statically linked|static-pie linked" || { echo "not a static binary: $binary"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"; [ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null || true' EXIT
version="$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)"

echo "==> OCI image ($kind) with umoci"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$version"
umoci unpack --rootless --image "$work/oci:$version" "$work/bundle"
if [ "$kind" = supervisor ]; then
  echo "==> runsc from the pinned module (tools/runsc, CGO_ENABLED=0)"
  (cd tools/runsc && CGO_ENABLED=0 go build -o "$work/runsc" gvisor.dev/gvisor/runsc)
  install -D -m 0755 "$binary" "$work/bundle/rootfs/usr/local/bin/sandman"
  install -D -m 0755 "$work/runsc" "$work/bundle/rootfs/usr/local/bin/runsc"
  # runsc's state and the agent's root are mounted here by the pod; tmp for runsc's logs.
  mkdir -p "$work/bundle/rootfs/"{tmp,run,proc,dev,sys}
  umoci repack --image "$work/oci:$version" "$work/bundle"
  umoci config --image "$work/oci:$version" \
    --config.user 0:0 \
    --config.entrypoint /usr/local/bin/sandman --config.cmd supervise \
    --config.label "org.opencontainers.image.source=sandman" \
    --config.label "org.opencontainers.image.version=$version"
else
  install -m 0755 "$binary" "$work/bundle/rootfs/sandman"
  umoci repack --image "$work/oci:$version" "$work/bundle"
  umoci config --image "$work/oci:$version" \
    --config.user 65532:65532 \
    --config.entrypoint /sandman --config.cmd run \
    --config.label "org.opencontainers.image.source=sandman" \
    --config.label "org.opencontainers.image.version=$version"
fi

target="${1:-}"
if [ -z "$target" ]; then
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  mkdir -p "$work/registry"
  cat > "$work/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  name=sandman; [ "$kind" = supervisor ] && name=sandman-supervisor
  target="127.0.0.1:$port/$name:$version"
fi

echo "==> push to $target"
skopeo copy --dest-tls-verify=false "oci:$work/oci:$version" "docker://$target"
skopeo inspect --tls-verify=false "docker://$target" | grep -E '"(Digest|Architecture|Os)"'
echo "pushed $target"
