#!/usr/bin/env bash
# Checks the deployment files without a machine to deploy on: the systemd unit
# (systemd-analyze verify, which must say nothing), the Dockerfile (hadolint), the Kubernetes
# manifests (deploy/check_kubernetes.py, then `supervisor check-config` of the configuration they
# embed), and the OpenTelemetry Collector configuration (YAML).
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

echo "OpenTelemetry Collector configuration"
python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); assert "traces" in c["service"]["pipelines"]' \
    deploy/otel-collector.yaml
echo "deploy/: OK"
