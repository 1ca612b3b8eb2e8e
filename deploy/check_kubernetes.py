#!/usr/bin/env python3
"""Checks deploy/kubernetes/*.yaml without a cluster: every document is a well-formed object;
the Deployment's references (Secret keys, ConfigMap, volume mounts, probe and Service ports, the
PersistentVolumeClaim) point at things that are there; the pod runs as non-root with a
read-only root file system; its probes are the supervisor's admin endpoints. Writes the
embedded supervisor.toml into OUT_DIR for `supervisor check-config`.

    python3 deploy/check_kubernetes.py deploy/kubernetes/ecma-supervisor.yaml OUT_DIR
"""

import sys

import yaml

problems = []


def need(condition, message):
    if not condition:
        problems.append(message)


def main(path, out_dir):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        need(isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str), f"{d}: apiVersion and kind")
        need(d.get("metadata", {}).get("name"), f"{d.get('kind')}: metadata.name")
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ["ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service"]:
        need(kind in by_kind, f"no {kind}")
    if problems:
        return
    config_map, secret = by_kind["ConfigMap"][0], by_kind["Secret"][0]
    pvc, deployment, service = by_kind["PersistentVolumeClaim"][0], by_kind["Deployment"][0], by_kind["Service"][0]
    toml = config_map.get("data", {}).get("supervisor.toml")
    need(toml, "the ConfigMap has no supervisor.toml")
    with open(f"{out_dir}/supervisor.toml", "w", encoding="utf-8") as f:
        f.write(toml or "")

    spec = deployment["spec"]
    need(spec.get("replicas") == 1, "one replica: the connector space is one SQLite file")
    need(spec.get("strategy", {}).get("type") == "Recreate", "strategy Recreate (one writer at a time)")
    labels = spec["template"]["metadata"]["labels"]
    need(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()), "selector matches the pod labels")
    need(all(labels.get(k) == v for k, v in service["spec"]["selector"].items()), "the Service selects the pod")
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
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                need(ref["name"] == secret["metadata"]["name"], f"env {env['name']}: secret {ref['name']}")
                need(ref["key"] in secret_keys, f"env {env['name']}: key {ref['key']} is not in the Secret")
        for mount in c.get("volumeMounts", []):
            need(mount["name"] in volumes, f"volumeMount {mount['name']} has no volume")
        for port in service["spec"]["ports"]:
            need(port["targetPort"] in ports, f"Service targetPort {port['targetPort']} is a container port")
    for name, volume in volumes.items():
        if "configMap" in volume:
            need(volume["configMap"]["name"] == config_map["metadata"]["name"], f"volume {name}: ConfigMap")
        if "persistentVolumeClaim" in volume:
            need(volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], f"volume {name}: claim")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    for p in problems:
        print(f"{sys.argv[1]}: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)
