#!/usr/bin/env bash
# The third-party servers that connector-rest's and connector-scim's end-to-end tests run
# (tests/src/rest_servers.rs): json-server and oauth2-mock-server from npm, and spyne with lxml
# and scim2-server with scim2-models from PyPI in a venv, all pinned, once per machine under
# ~/.cache (again when the pins or Python's version change).
# Prints the directory: node_modules/ and venv/ are in it.
#
#   scripts/rest-tools.sh
#
# Needs node (18.12 or later: oauth2-mock-server 7's engines; Debian 12's nodejs is 18.19), npm
# and python3 with venv.
set -euo pipefail
dir=${ECMA_REST_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ecma-supervisor/rest-tools}
npm_pins="json-server@0.17.4 oauth2-mock-server@7.2.1"
pip_pins="spyne==2.14.0 lxml==6.2.0 scim2-server==0.8.3 scim2-models==0.12.3"

missing=()
command -v node >/dev/null 2>&1 || missing+=(node)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
    echo "rest-tools.sh: ${missing[*]} not found: install Node.js 18.12 or later with npm (Debian: nodejs npm) and python3" >&2
    exit 1
fi
# oauth2-mock-server 7 runs on Node.js 18.12 and later (8 would need 20.19, newer than Debian 12's).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
              process.exit(a > 18 || (a === 18 && b >= 12) ? 0 : 1)'; then
    echo "rest-tools.sh: node $(node --version) is too old: oauth2-mock-server 7 needs Node.js 18.12 or later" >&2
    exit 1
fi
# A venv's interpreter is the Python it was made with: a new one needs a new venv.
python_version=$(python3 -c 'import sys; print(sys.version.split()[0])')
stamp="$npm_pins $pip_pins python $python_version"

mkdir -p "$(dirname "$dir")"
# One set-up at a time (tests start several servers at once, from several test binaries).
exec 9>"$dir.lock"
flock 9
if [ "$(cat "$dir/.ready" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    # A local prefix: node_modules/ under $dir, nothing global; the exact versions, no audit or
    # funding notices (they would ask the registry more and print on stdout).
    # shellcheck disable=SC2086
    npm install --prefix "$dir" --save-exact --no-audit --no-fund --silent $npm_pins >&2
    python3 -m venv "$dir/venv" >&2
    # shellcheck disable=SC2086
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check $pip_pins >&2
    printf '%s' "$stamp" >"$dir/.ready"
fi
echo "$dir"
