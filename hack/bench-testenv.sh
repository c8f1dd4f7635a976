#!/usr/bin/env bash
# Times `testenv up` with cached binaries: 5 runs, median of "API ready" and "control plane
# ready" (nodes Ready, CRDs Established, default ServiceAccount made).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sandman/cargo-target}"
cargo build --quiet -p sandman-testenv --bin testenv
testenv="$CARGO_TARGET_DIR/debug/testenv"
dir=$(mktemp -d)
"$testenv" --dir "$dir" build >/dev/null
api=(); all=()
for i in 1 2 3 4 5; do
  out=$("$testenv" --dir "$dir" up --crds crds)
  "$testenv" --dir "$dir" down >/dev/null
  api+=("$(sed -n 's/^API ready in \([0-9.]*\)s.*/\1/p' <<<"$out")")
  all+=("$(sed -n 's/.* in \([0-9.]*\)s$/\1/p' <<<"$(head -1 <<<"$out")")")
  echo "run $i: API ready ${api[-1]}s, control plane ready ${all[-1]}s"
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
echo "median of 5: API ready $(median "${api[@]}")s, control plane ready $(median "${all[@]}")s"
rm -rf "$dir"
