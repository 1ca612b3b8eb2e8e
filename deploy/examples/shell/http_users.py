#!/usr/bin/env python3
"""connector-shell script for the JSON-over-HTTP user service (http_service.py).

parameters: {"base_url": "http://host:port"}; secrets: the service's bearer token (the
`secrets` parameter as one string, which arrives as {"secret": ...}, or {"token": ...}).
It serves validate, export and import (full; a delta is answered as a full run).
"""

import json
import sys
import urllib.error
import urllib.request

FIELDS = ["userName", "displayName", "email", "active"]


def out(line):
    sys.stdout.write(json.dumps(line) + "\n")


class Service:
    def __init__(self, request):
        self.base = request["parameters"].get("base_url", "").rstrip("/")
        secrets = request["secrets"]
        self.token = secrets.get("token") or secrets.get("secret") or ""

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                text = response.read()
                return response.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, None


KIND = {404: "no_such_object", 409: "already_exists", 401: "permission_denied", 403: "permission_denied"}


def export(request, service):
    for entry in request["entries"]:
        identifier = entry["identifier"]
        fields = {name: (values[0] if values else None)
                  for name, values in entry["attributes"].items() if name in FIELDS}
        kind = entry["modification"]
        try:
            if kind == "add":
                status, user = service.call("POST", "/users", fields)
            elif kind in ("update", "replace"):
                if kind == "replace":
                    fields = {**{f: None for f in FIELDS}, **fields}
                status, user = service.call("PATCH", "/users/" + entry["anchor"], fields)
            elif kind == "delete":
                status, user = service.call("DELETE", "/users/" + entry["anchor"])
            else:
                out({"identifier": identifier, "error": {"kind": "unsupported", "message": kind}})
                continue
        except OSError as e:  # refused, unreachable, timed out: this entry was not done
            out({"identifier": identifier, "error": {"kind": "connection_failed", "message": str(e)}})
            continue
        if status >= 300:
            out({"identifier": identifier,
                 "error": {"kind": KIND.get(status, "internal"), "message": f"the service answered {status}"}})
        elif kind == "delete":
            out({"identifier": identifier})
        else:
            out({"identifier": identifier, "anchor": user["id"]})


def import_page(request, service):
    imp = request["import"]
    offset = imp["cursor"] or 0
    status, page = service.call("GET", f"/users?offset={offset}&limit={imp['page_size']}")
    if status != 200:
        print(f"listing users: the service answered {status}", file=sys.stderr)
        sys.exit(77 if status in (401, 403) else 69)
    for user in page["users"]:
        out({"anchor": user["id"],
             "attributes": {k: v for k, v in user.items() if k in FIELDS and v is not None}})
    following = offset + len(page["users"])
    out({"more": following < page["total"], "cursor": following})


def main():
    request = json.load(sys.stdin)
    service = Service(request)
    operation = request["operation"]
    if operation == "validate":
        try:
            status, _ = service.call("GET", "/users?limit=1")
        except OSError as e:
            out({"problem": f"{service.base} cannot be reached: {e}", "parameter": "parameters",
                 "kind": "connection_failed"})
            return
        if status != 200:
            out({"problem": f"the service answered {status} (is the token right?)", "parameter": "secrets",
                 "kind": "permission_denied"})
    elif operation == "export":
        export(request, service)
    elif operation == "import":
        import_page(request, service)
    else:
        out({"error": {"kind": "unsupported", "message": operation}})


if __name__ == "__main__":
    main()
