#!/usr/bin/env bash
# Runs the third-party SCIM conformance suite scim2-tester (scripts/scim2-tester.sh) against the
# quickstart (deploy/examples/quickstart.toml, on free loopback ports, data in a temporary
# directory), prints its summary, and fails if any check fails that docs/conformance.md does not
# list with the RFC reasoning for why the server is right.
#
#   ./scripts/conformance.sh [SUPERVISOR_BINARY]     (default: target/debug/supervisor)
#   CONFORMANCE_STORE_URL=postgres://... ./scripts/conformance.sh    (the connector space in PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
supervisor=${1:-${CARGO_TARGET_DIR:-target}/debug/supervisor}
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
scim_port=$(free_port)
admin_port=$(free_port)
sed -e "s/127.0.0.1:8080/127.0.0.1:$scim_port/" -e "s/127.0.0.1:9090/127.0.0.1:$admin_port/" \
    deploy/examples/quickstart.toml >"$work/quickstart.toml"
# With CONFORMANCE_STORE_URL (a PostgreSQL database), the connector space is there instead of
# the SQLite file: the same checks against the shared store.
if [ -n "${CONFORMANCE_STORE_URL:-}" ]; then
    printf '\n[store]\nurl = { env = "CONFORMANCE_STORE_URL" }\n' >>"$work/quickstart.toml"
fi
token=conformance-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
SCIM_TOKEN=$token setsid "$supervisor" run --config "$work/quickstart.toml" --data-dir "$work/data" \
    >"$work/supervisor.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    if python3 - "$admin_port" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
PY
    kill -0 "$pid" 2>/dev/null || { cat "$work/supervisor.log" >&2; echo "the supervisor exited" >&2; exit 1; }
    sleep 0.1
done

out=$work/scim2-tester.out
scripts/scim2-tester.sh "http://127.0.0.1:$scim_port/scim/demo" "$token" | tee "$out"
kill -0 "$pid" 2>/dev/null || { cat "$work/supervisor.log" >&2; echo "the supervisor died during the checks" >&2; exit 1; }

# Every failed check must be listed (by its check name and resource type) in docs/conformance.md.
unexpected=0
while IFS= read -r line; do
    case $line in DEVIATION\ *|ERROR\ *|CRITICAL\ *) ;; *) continue ;; esac
    key=$(printf '%s' "$line" | sed -E 's/^[A-Z]+ ([^:]*):.*/\1/')
    if ! grep -qF -- "\`$key\`" docs/conformance.md; then
        echo "unexpected scim2-tester failure: $line" >&2
        unexpected=$((unexpected + 1))
    fi
done <"$out"
if [ "$unexpected" -gt 0 ]; then
    echo "$unexpected scim2-tester check(s) failed that docs/conformance.md does not explain" >&2
    exit 1
fi
grep '^scim2-tester:' "$out" | tail -1
