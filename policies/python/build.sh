#!/usr/bin/env bash
# Builds the Python example policies with componentize-py from PyPI, into OUT (default: the
# directory of each policy), each against the world named in its `world` file. The venv lives
# in VENV (default .venv here), made on first use.
#
#   bash policies/python/build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
venv="${VENV:-$here/.venv}"
version=0.25.1
if [ ! -x "$venv/bin/componentize-py" ] || ! "$venv/bin/componentize-py" --version | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "componentize-py==$version"
fi
mkdir -p "$out"
for policy in "$here"/*/; do
  name="$(basename "$policy")"
  world="$(cat "$policy/world")"
  (cd "$policy" && "$venv/bin/componentize-py" -d "$here/../../wit" -w "$world" \
    componentize app -o "$out/${name//-/_}.wasm")
done
