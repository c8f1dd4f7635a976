#!/usr/bin/env bash
# `sandman policy test` of an unchanged component, first run against later runs, per language:
# the first compiles the component into an empty cache, the later ones read it back. Medians of
# five later runs. Uses a release build of the CLI, as an author installing sandman has.
#
#   bash hack/bench-policy-test.sh
#
# The Python and JavaScript components are the example policies the tests build
# (policies/python, policies/js): run `bash hack/test.sh --test scaffold` once first.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
release="${SANDMAN_RELEASE_TARGET_DIR:-$HOME/.cache/sandman/cargo-target-release}"
CARGO_TARGET_DIR="$release" cargo build --quiet --release --bin sandman
sandman="$release/release/sandman"
wasm="$target/wasm-policies/wasm32-wasip2/release"
polyglot="$target/polyglot/wasm"

# language, suite, manifest, component (empty for CEL)
cases=(
  "rust|policies/tests/untrusted-to-gvisor.yaml|policies/untrusted-to-gvisor/policy.yaml|$wasm/untrusted_to_gvisor.wasm"
  "python|policies/tests/untrusted-to-gvisor.yaml|policies/untrusted-to-gvisor/policy.yaml|$polyglot/untrusted_to_gvisor.wasm"
  "js|policies/tests/idle-suspend.yaml|policies/idle-suspend/policy.yaml|$polyglot/idle_suspend.wasm"
  "cel|policies/tests/idle-suspend.yaml|policies/cel/idle-suspend.yaml|"
)

seconds() { local start end; start=$(date +%s.%N); "$@" >/dev/null 2>&1 || { "$@"; exit 1; }; end=$(date +%s.%N); python3 -c "print(f'{$end - $start:.2f}')"; }

printf '| language | component | first run (compiles) | later runs, median of 5 | ratio |\n|---|---|---|---|---|\n'
for case in "${cases[@]}"; do
  IFS='|' read -r lang suite manifest component <<<"$case"
  args=(policy test "$suite" --policy "$manifest")
  size="CEL engine"
  if [ -n "$component" ]; then
    [ -f "$component" ] || { echo "missing $component: run bash hack/test.sh --test scaffold first" >&2; exit 1; }
    args+=(--wasm "$component")
    size=$(python3 -c "b=$(stat -c %s "$component"); print(f'{b/1048576:.1f} MiB' if b >= 1048576 else f'{b//1024} KiB')")
  fi
  cache=$(mktemp -d)
  export SANDMAN_POLICY_CACHE="$cache"
  first=$(seconds "$sandman" "${args[@]}")
  later=()
  for _ in 1 2 3 4 5; do later+=("$(seconds "$sandman" "${args[@]}")"); done
  median=$(printf '%s\n' "${later[@]}" | sort -n | sed -n 3p)
  ratio=$(python3 -c "print(f'{$first / $median:.0f}x')")
  printf '| %s | %s | %s s | %s s | %s |\n' "$lang" "$size" "$first" "$median" "$ratio"
  rm -rf "$cache"
done
