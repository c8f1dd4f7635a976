#!/usr/bin/env bash
# Times one of the README's two commands as a newcomer meets it on a fresh machine: an empty
# HOME (so no cargo registry, Go module or build cache, no control plane, no npm or pip cache),
# the toolchain without wasm32-wasip2, and none of the Debian packages the tests install.
#
#   SANDMAN_COLD_BENCH=1 bash hack/bench-cold.sh demo|test|ci
#
# It changes this machine on purpose: it removes the wasm32-wasip2 target and Debian's runsc,
# runc, busybox-static and docker-registry, which the command then installs again. Hence the
# guard. Run it on a clean clone; the figures go in BENCHMARKS.md ("The README's two commands
# on a fresh machine").
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:?usage: SANDMAN_COLD_BENCH=1 bash hack/bench-cold.sh demo|test|ci}"
[ "${SANDMAN_COLD_BENCH:-}" = 1 ] || { echo "bench-cold: set SANDMAN_COLD_BENCH=1; it removes packages and a rustup target (see the header)" >&2; exit 2; }
case "$what" in
  demo) command=(bash hack/demo.sh) ;;
  test) command=(bash hack/test.sh) ;;
  # CI: the test command with fmt and clippy, as .ci/run does on a clean clone.
  ci) command=(bash .ci/run) ;;
  *) echo "bench-cold: demo, test or ci, not $what" >&2; exit 2 ;;
esac

rustup target remove wasm32-wasip2 >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq runsc runc busybox-static docker-registry >/dev/null 2>&1 || true

fresh="$(mktemp -d /tmp/sandman-cold-home.XXXXXX)"
# What a newcomer's machine has set up, not caches: the toolchains' homes and configuration.
for kept in .gitconfig .npmrc .config/go/env; do
  if [ -e "$HOME/$kept" ]; then mkdir -p "$fresh/$(dirname "$kept")"; cp "$HOME/$kept" "$fresh/$kept"; fi
done
echo "bench-cold: $what with HOME=$fresh" >&2
started=$SECONDS
HOME="$fresh" CARGO_HOME="$fresh/.cargo" RUSTUP_HOME="${RUSTUP_HOME:-/root/.rustup}" \
  PYENV_ROOT="${PYENV_ROOT:-/root/.pyenv}" XDG_CACHE_HOME="$fresh/.cache" CARGO_TARGET_DIR= \
  CARGO_TERM_COLOR=never "${command[@]}"
echo "bench-cold: $what took $((SECONDS - started)) s" >&2
