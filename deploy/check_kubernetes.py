#!/usr/bin/env python3
"""Checks a manifest of deploy/kubernetes/ without a cluster: every document is a well-formed
object; the Deployment's references (Secret keys, ConfigMap, volume mounts, probe and Service
ports, the PersistentVolumeClaim) point at things that are there; every environment variable
that the embedded supervisor.toml names is set; the pod runs as non-root with a read-only root
file system; its probes are the supervisor's admin endpoints. What the Deployment must look like
follows from where the configuration keeps the connector space:

- the SQLite file in the data directory (no [store] url): one replica, strategy Recreate, the
  data directory on the PersistentVolumeClaim (one writer at a time);
- PostgreSQL ([store] url): at least two replicas, a RollingUpdate that never lowers the number
  of pods serving (maxUnavailable 0), a PodDisruptionBudget, no PersistentVolumeClaim (the data
  directory only holds sockets and a lock file: an emptyDir).

Writes the embedded supervisor.toml into OUT_DIR (created if needed) for
`supervisor check-config`.

    python3 deploy/check_kubernetes.py deploy/kubernetes/ecma-supervisor.yaml OUT_DIR
    python3 deploy/check_kubernetes.py deploy/kubernetes/ecma-supervisor-ha.yaml OUT_DIR_HA
"""

import os
import re
import sys

import yaml

problems = []

# The data directory when neither --data-dir nor server.data_dir names one: the image's
# STATE_DIRECTORY (deploy/Dockerfile).
IMAGE_DATA_DIR = "/var/lib/ecma-supervisor"


def need(condition, message):
    if not condition:
        problems.append(message)


def shared_store(toml):
    """Whether the configuration puts the connector space in PostgreSQL: a [store] table with a
    url (a line-based look, enough for the files checked here; check-config parses it fully)."""
    section = None
    for line in toml.splitlines():
        line = line.strip()
        header = re.match(r"^\[([^\[\]]+)\]", line)
        if header:
            section = header.group(1).strip()
        elif section == "store" and re.match(r"^url\s*=", line):
            return True
    return False


def variables(toml):
    """The environment variables the configuration reads: { env = "X" }, token_env = "X" and
    ${X} (not ${X:-default}, nor ${data_dir} and ${config_dir})."""
    names = set(re.findall(r'\benv\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"', toml))
    names |= set(re.findall(r'\btoken_env\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"', toml))
    names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", toml))
    return names - {"data_dir", "config_dir"}


def main(path, out_dir):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        need(isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str), f"{d}: apiVersion and kind")
        need(d.get("metadata", {}).get("name"), f"{d.get('kind')}: metadata.name")
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ["ConfigMap", "Secret", "Deployment", "Service"]:
        need(kind in by_kind, f"no {kind}")
    if problems:
        return
    config_map, secret = by_kind["ConfigMap"][0], by_kind["Secret"][0]
    deployment, service = by_kind["Deployment"][0], by_kind["Service"][0]
    toml = config_map.get("data", {}).get("supervisor.toml")
    need(toml, "the ConfigMap has no supervisor.toml")
    toml = toml or ""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "supervisor.toml"), "w", encoding="utf-8") as f:
        f.write(toml)
    shared = shared_store(toml)

    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    matches_pods = lambda selector: all(labels.get(k) == v for k, v in selector.items())  # noqa: E731
    need(matches_pods(spec["selector"]["matchLabels"]), "selector matches the pod labels")
    need(matches_pods(service["spec"]["selector"]), "the Service selects the pod")
    strategy = spec.get("strategy", {})
    if shared:
        need(spec.get("replicas", 1) >= 2, "at least two replicas: the connector space is shared (PostgreSQL)")
        need(strategy.get("type") == "RollingUpdate", "strategy RollingUpdate (every pod is active)")
        need(
            str(strategy.get("rollingUpdate", {}).get("maxUnavailable")) in ("0", "0%"),
            "rollingUpdate.maxUnavailable 0 (a new pod is ready before an old one stops)",
        )
        need("PersistentVolumeClaim" not in by_kind, "no PersistentVolumeClaim: the connector space is in PostgreSQL")
        budgets = by_kind.get("PodDisruptionBudget", [])
        need(budgets, "a PodDisruptionBudget (voluntary disruptions leave a pod serving)")
        for budget in budgets:
            need(matches_pods(budget["spec"].get("selector", {}).get("matchLabels", {})), "the PodDisruptionBudget selects the pod")
            minimum = budget["spec"].get("minAvailable", 0)
            need(
                (isinstance(minimum, int) and minimum >= 1) or "maxUnavailable" in budget["spec"],
                "the PodDisruptionBudget keeps a pod (minAvailable >= 1)",
            )
    else:
        need(spec.get("replicas") == 1, "one replica: the connector space is one SQLite file")
        need(strategy.get("type") == "Recreate", "strategy Recreate (one writer at a time)")
        need("PersistentVolumeClaim" in by_kind, "a PersistentVolumeClaim: the connector space is a file in the data directory")
    claims = {c["metadata"]["name"] for c in by_kind.get("PersistentVolumeClaim", [])}

    pod = spec["template"]["spec"]
    need(pod.get("securityContext", {}).get("runAsNonRoot") is True, "runAsNonRoot")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for c in pod["containers"]:
        need(c.get("image"), f"container {c['name']}: image")
        sc = c.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True, f"container {c['name']}: readOnlyRootFilesystem")
        need(sc.get("allowPrivilegeEscalation") is False, f"container {c['name']}: allowPrivilegeEscalation false")
        need("ALL" in sc.get("capabilities", {}).get("drop", []), f"container {c['name']}: drop ALL capabilities")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            get = c.get(probe, {}).get("httpGet", {})
            need(get.get("path") == path, f"{probe} on {path}")
            need(get.get("port") in ports, f"{probe} port {get.get('port')} is a container port")
        env_names = {env["name"] for env in c.get("env", [])}
        for name in sorted(variables(toml) - env_names):
            need(False, f"container {c['name']}: supervisor.toml reads {name}, which the container's env does not set")
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                need(ref["name"] == secret["metadata"]["name"], f"env {env['name']}: secret {ref['name']}")
                need(ref["key"] in secret_keys, f"env {env['name']}: key {ref['key']} is not in the Secret")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for mount in mounts.values():
            need(mount["name"] in volumes, f"volumeMount {mount['name']} has no volume")
        args = c.get("args", [])
        data_dir = args[args.index("--data-dir") + 1] if "--data-dir" in args[:-1] else IMAGE_DATA_DIR
        data = volumes.get(mounts.get(data_dir, {}).get("name"), {})
        need(data, f"container {c['name']}: the data directory {data_dir} is a volume (the root file system is read-only)")
        if shared:
            need("emptyDir" in data, f"the data directory {data_dir} is an emptyDir (it only holds sockets and a lock file)")
        else:
            need("persistentVolumeClaim" in data, f"the data directory {data_dir} is on the PersistentVolumeClaim")
        for port in service["spec"]["ports"]:
            need(port["targetPort"] in ports, f"Service targetPort {port['targetPort']} is a container port")
    for name, volume in volumes.items():
        if "configMap" in volume:
            need(volume["configMap"]["name"] == config_map["metadata"]["name"], f"volume {name}: ConfigMap")
        if "persistentVolumeClaim" in volume:
            need(not shared, f"volume {name}: no PersistentVolumeClaim with a shared connector space")
            need(volume["persistentVolumeClaim"]["claimName"] in claims, f"volume {name}: claim")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    for p in problems:
        print(f"{sys.argv[1]}: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)
