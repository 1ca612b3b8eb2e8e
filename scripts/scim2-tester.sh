#!/usr/bin/env bash
# The third-party SCIM 2.0 conformance checks of scim2-tester (https://pypi.org/project/scim2-tester/,
# by Yaal Coop) against a running SCIM server.
#
#   ./scripts/scim2-tester.sh BASE_URL TOKEN
#   ./scripts/scim2-tester.sh http://127.0.0.1:8080/scim/demo quickstart-token-1234
#
# scim2-tester is a Python library (its command line is `scim2 --url URL test`, in the separate
# scim2-cli package, which prints text only and counts skipped checks as failures); it is driven
# here through its API by scripts/scim2_tester_run.py. It comes from PyPI, with every dependency
# pinned, once per machine, into a venv under ~/.cache (or $XDG_CACHE_HOME); the venv is made
# again when the pins below change.
#
# Prints one line per failed check (DEVIATION, ERROR or CRITICAL: status, check, resource type
# and scim2-tester's reason), then
#   scim2-tester: N passed, M failed, K skipped (SUCCESS a, COMPLIANT b, ...)
# Exit status: 0 when the checks ran, whatever they found; non-zero when they could not run
# (no Python venv, PyPI unreachable on the first run, server unreachable, token refused).
# SCIM2_TESTER_VERBOSE=1 adds the data scim2-tester keeps with each failure (responses, payloads).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BASE_URL TOKEN" >&2
    exit 2
fi
base_url=$1
token=$2
here=$(cd "$(dirname "$0")" && pwd)

# scim2-tester 0.5.2 (current on PyPI) with scim2-client's httpx2 engine, and everything they pull in.
pins=(
    "scim2-tester[httpx2]==0.5.2"
    scim2-client==0.13.2
    scim2-models==0.12.3
    httpx2==2.17.0
    httpcore2==2.17.0
    h11==0.16.0
    anyio==4.16.0
    idna==3.21
    truststore==0.10.5
    pydantic==2.14.4
    pydantic_core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing_extensions==4.16.0
    email-validator==2.4.0
    dnspython==2.9.2
    lark==1.3.1
)

venv=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ecma-supervisor/scim2-tester
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/pins.txt" 2>/dev/null)" != "${pins[*]}" ]; then
    echo "scim2-tester: installing ${pins[0]} from PyPI into $venv" >&2
    mkdir -p "$(dirname "$venv")"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
    # Written last: an interrupted install is done again next time.
    printf '%s' "${pins[*]}" >"$venv/pins.txt"
fi

# The token goes by the environment, not the command line (which other users can see).
SCIM2_TESTER_TOKEN=$token exec "$venv/bin/python" "$here/scim2_tester_run.py" "$base_url"
