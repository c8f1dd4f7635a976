#!/usr/bin/env bash
# What the README's two commands need, installed or built on first use and reused after that.
# Sourced by hack/test.sh and hack/demo.sh, so a fresh machine needs no manual step and CI
# proves the same path a newcomer takes.
#
# A prerequisite that cannot be had stops here with one line that says which, before any build
# or control-plane log can bury it.
set -euo pipefail

# One build directory for the tests, the demo and CI, outside the clone so a new clone reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"

setup_fail() { printf 'sandman setup: %s\n' "$*" >&2; exit 1; }
setup_step() { printf '==> setup: %s (%ss)\n' "$*" "$SECONDS" >&2; }

# Debian packages, each with the command that shows it is there. Debian's runsc is the one the
# checkpoint benchmark compares the pinned runsc with; runc runs the real node's pods; busybox
# is their root file system, with a static bash for the E2B SDKs' commands; ip makes the real
# node's network namespaces; the distribution tests run docker-registry on a loopback port (its
# service is not started).
setup_packages() {
  local missing=()
  command -v runsc >/dev/null 2>&1 || missing+=(runsc)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  [ -x /bin/bash-static ] || missing+=(bash-static)
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  [ "${#missing[@]}" -eq 0 ] && return 0

  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || setup_fail "not root and no passwordless sudo: cannot apt-get install ${missing[*]} (install them, or run as root)"
    sudo="sudo -n"
  fi
  command -v apt-get >/dev/null 2>&1 || setup_fail "no apt-get: install ${missing[*]} with this system's package manager"
  setup_step "apt-get install ${missing[*]}"
  $sudo apt-get update -qq >/dev/null || setup_fail "apt-get update failed: the package registry is not reachable"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || setup_fail "apt-get install ${missing[*]} failed"
}

# Real containers (the checkpoint and real-node tests) need root and namespaces; checked here so
# that the reason is the first line, not a runtime's error deep in a test's log.
setup_namespaces() {
  [ "$(id -u)" -eq 0 ] || setup_fail "not root: the checkpoint and real-node tests run real runsc and runc containers, which need root"
  unshare --user --net --mount true 2>/dev/null \
    || setup_fail "this kernel refuses new user, network or mount namespaces (unshare --user --net --mount true failed): real containers cannot run here"
}

# rustup adds a toolchain file's targets only when it installs that toolchain, so a machine that
# already has `stable` never gets wasm32-wasip2 from rust-toolchain.toml.
setup_rust() {
  command -v rustup >/dev/null 2>&1 || setup_fail "rustup not found: install Rust from https://rustup.rs"
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    setup_step "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2 >/dev/null || setup_fail "rustup target add wasm32-wasip2 failed"
  fi
}

# The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok) and helm, built from the pinned Go modules into ~/.cache/sandman/testenv.
setup_control_plane() {
  command -v go >/dev/null 2>&1 || setup_fail "go not found: the local control plane is built from the Go modules in tools/testenv"
  mkdir -p "$CARGO_TARGET_DIR" || setup_fail "cannot create the build directory $CARGO_TARGET_DIR"
  setup_step "control plane (built once, then reused)"
  cargo run --quiet -p sandman-testenv --bin testenv -- build >/dev/null
}

# Everything the whole suite needs: the policy tests also build Python and JavaScript components.
setup_for_tests() {
  command -v python3 >/dev/null 2>&1 || setup_fail "python3 not found: the Python policy tests install componentize-py into a venv"
  python3 -c 'import venv' 2>/dev/null || setup_fail "python3 has no venv module (apt-get install python3-venv)"
  command -v npm >/dev/null 2>&1 || setup_fail "npm not found: the JavaScript policy tests install componentize-js"
  setup_namespaces
  setup_packages
  setup_rust
  setup_control_plane
}

# The demo runs on kwok nodes: Rust, Go and the control plane.
setup_for_demo() {
  setup_rust
  setup_control_plane
}
