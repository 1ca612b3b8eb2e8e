#!/usr/bin/env bash
# Makes the Python connector runnable: a venv with grpcio (pinned, from PyPI) and the ecma.v1
# stubs generated from proto/ with grpcio-tools, once per machine under ~/.cache (again when the
# pins or the .proto change). Prints the venv's path.
#
#   examples/connector-python/setup.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto=$(cd "$here/../../proto/proto" && pwd)
venv=${ECMA_PYTHON_CONNECTOR_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ecma-supervisor/connector-python}
pins="grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1"
stamp="$pins $(sha256sum "$proto/ecma/v1/connector.proto" | cut -d' ' -f1)"
mkdir -p "$(dirname "$venv")"
# One set-up at a time (tests start several connectors at once).
exec 9>"$venv.lock"
flock 9
if [ "$(cat "$venv/.ready" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins >&2
    mkdir -p "$venv/stubs"
    "$venv/bin/python" -m grpc_tools.protoc -I "$proto" --python_out="$venv/stubs" \
        --grpc_python_out="$venv/stubs" "$proto/ecma/v1/connector.proto" >&2
    printf '%s' "$stamp" >"$venv/.ready"
fi
echo "$venv"
