#!/usr/bin/env bash
# The README's test command: sets up what the suite needs (hack/setup.sh), then runs it. Extra
# arguments go to `cargo test`, e.g. `bash hack/test.sh --test sandbox`.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/setup.sh
setup_for_tests

if [ "$#" -eq 0 ]; then
  printf '==> policy SDK and example policies, natively\n' >&2
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR/policies-native" cargo test --manifest-path policies/Cargo.toml --quiet
fi

printf '==> cargo test --workspace --all-features\n' >&2
cargo test --workspace --all-features "$@"
