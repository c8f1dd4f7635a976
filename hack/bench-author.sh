#!/usr/bin/env bash
# A new policy author's path, timed per language: `sandman policy new` → build → `policy test`
# → `policy push --sign` to a loopback registry. Cold: a new project with empty pip and npm
# caches (Rust's crates come from ~/.cargo, already downloaded) and no build output. Warm: the
# same project after an edit, built again.
#
#   bash hack/bench-author.sh [rust python js]
#
# Needs Debian's docker-registry (as the tests do), openssl, python3 and node/npm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
cargo build --quiet --bin sandman
sandman="$CARGO_TARGET_DIR/debug/sandman"
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(rust python js)

work=$(mktemp -d)
registry_pid=""
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<YAML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry/storage } }
http: { addr: 127.0.0.1:$port }
YAML
/usr/bin/docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
registry_pid=$!
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# Runs "$@" and prints its wall-clock seconds.
timed() { local start end; start=$(date +%s.%N); "$@" >"$work/step.log" 2>&1 || { cat "$work/step.log" >&2; exit 1; }; end=$(date +%s.%N); python3 -c "print(f'{$end - $start:.1f}')"; }

build() {
  case "$1" in
    rust) env -u CARGO_TARGET_DIR cargo build --release --quiet ;;
    python) bash build.sh ;;
    js) npm install --no-audit --no-fund --quiet && npm run build --silent ;;
  esac
}
component() { case "$1" in rust) echo "target/wasm32-wasip2/release/demo_$1.wasm" ;; *) echo policy.wasm ;; esac; }
edit() { case "$1" in rust) echo "// edited" >> src/lib.rs ;; python) echo "# edited" >> app.py ;; js) echo "// edited" >> policy.js ;; esac; }

echo "| language | run | new | build | test | sign + push | total |"
echo "|---|---|---|---|---|---|---|"
for lang in "${langs[@]}"; do
  export PIP_CACHE_DIR="$work/pip-cache-$lang" npm_config_cache="$work/npm-cache-$lang"
  cd "$work"
  new=$(timed "$sandman" policy new "demo-$lang" --lang "$lang" --hooks isolation,lifecycle)
  cd "demo-$lang"
  for run in cold warm; do
    [ "$run" = warm ] && { edit "$lang"; new=0.0; }
    built=$(timed build "$lang")
    tested=$(timed "$sandman" policy test tests/suite.yaml)
    pushed=$(timed "$sandman" policy push "$(component "$lang")" "127.0.0.1:$port/policies/demo-$lang:$run" --sign "$work/key.pem")
    total=$(python3 -c "print(f'{$new + $built + $tested + $pushed:.1f}')")
    echo "| $lang | $run | ${new} s | ${built} s | ${tested} s | ${pushed} s | **${total} s** |"
  done
  cd "$OLDPWD"
done
