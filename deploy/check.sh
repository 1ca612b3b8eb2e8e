#!/usr/bin/env bash
# Checks the deployment files without a machine to deploy on: the systemd unit
# (systemd-analyze verify, which must say nothing), the Dockerfile (hadolint), the Kubernetes
# manifests, one with the connector space in SQLite and one with several replicas on a
# PostgreSQL store (deploy/check_kubernetes.py, then `supervisor check-config` of the
# configuration each embeds), the Docker Compose set-up of several supervisors (its YAML, the
# configuration it mounts, and `haproxy -c` where HAProxy is installed), and the OpenTelemetry
# Collector configuration (YAML).
#
#   SUPERVISOR=target/debug/supervisor HADOLINT=hadolint deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUPERVISOR=$(realpath "${SUPERVISOR:-target/debug/supervisor}")
HADOLINT=${HADOLINT:-hadolint}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "systemd unit"
sed "s#/usr/local/bin/supervisor#$SUPERVISOR#" deploy/systemd/ecma-supervisor.service >"$tmp/ecma-supervisor.service"
said=$(systemd-analyze verify "$tmp/ecma-supervisor.service" 2>&1) || { echo "$said" >&2; exit 1; }
if [ -n "$said" ]; then
    echo "systemd-analyze verify: $said" >&2
    exit 1
fi

echo "Dockerfile"
"$HADOLINT" deploy/Dockerfile

echo "Kubernetes manifests"
python3 deploy/check_kubernetes.py deploy/kubernetes/ecma-supervisor.yaml "$tmp"
LDAP_URL=ldaps://ldap.example.com LDAP_BASE_DN=dc=example,dc=com LDAP_BIND_DN=cn=scim,dc=example,dc=com \
    LDAP_BIND_PASSWORD=only-for-the-check \
    "$SUPERVISOR" check-config --config "$tmp/supervisor.toml" --data-dir "$tmp/data"
python3 deploy/check_kubernetes.py deploy/kubernetes/ecma-supervisor-ha.yaml "$tmp/ha"
STORE_URL=postgres://check@db.example.com/ecma DATABASE_URL=postgres://check@db.example.com/app \
    "$SUPERVISOR" check-config --config "$tmp/ha/supervisor.toml" --data-dir "$tmp/ha/data"

echo "Docker Compose: several supervisors on one PostgreSQL store"
python3 - deploy/compose/ha/docker-compose.yml <<'PY'
import os, sys, yaml
path = sys.argv[1]
services = yaml.safe_load(open(path, encoding="utf-8"))["services"]
nodes = [s for s in services.values() if s.get("command", [""])[0] == "run"]
assert len(nodes) >= 2, f"{path}: two or more supervisors"
assert "healthcheck" in services.get("postgres", {}), f"{path}: PostgreSQL with a healthcheck"
assert "haproxy" in services, f"{path}: HAProxy in front"
for node in nodes:
    assert not any("9090" in str(p) for p in node.get("ports", [])), f"{path}: the admin listener is not published"
    for name in ("STORE_URL", "DATABASE_URL", "SCIM_TOKEN"):
        assert name in node.get("environment", {}), f"{path}: {name} is not set"
for service in services.values():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert os.path.exists(os.path.join(os.path.dirname(path), source)), f"{path}: {source} is missing"
PY
STORE_URL=postgres://check@db.example.com/ecma DATABASE_URL=postgres://check@db.example.com/app \
    "$SUPERVISOR" check-config --config deploy/examples/ha.toml --data-dir "$tmp/compose-data"
if command -v haproxy >/dev/null; then
    haproxy -c -q -f deploy/compose/ha/haproxy.cfg
fi

echo "deploy/examples/rest and scim-relay.toml: the configuration of each is whole"
SCIM_TOKEN=check-token-0123456789 REST_BASE_URL=http://rest.example.com \
    "$SUPERVISOR" check-config --config deploy/examples/rest/json-server.toml --data-dir "$tmp/rest-data"
SCIM_TOKEN=check-token-0123456789 SOAP_BASE_URL=http://soap.example.com SOAP_USER=u SOAP_PASSWORD=p \
    "$SUPERVISOR" check-config --config deploy/examples/rest/soap.toml --data-dir "$tmp/soap-data"
SCIM_TOKEN=check-token-0123456789 SCIM_TARGET_URL=https://app.example.com/scim/v2 SCIM_TARGET_TOKEN=t \
    "$SUPERVISOR" check-config --config deploy/examples/scim-relay.toml --data-dir "$tmp/relay-data"

echo "OpenTelemetry Collector configuration"
python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); assert "traces" in c["service"]["pipelines"]' \
    deploy/otel-collector.yaml
echo "deploy/: OK"
