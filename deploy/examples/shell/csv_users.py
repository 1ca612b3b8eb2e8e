#!/usr/bin/env python3
"""Users in a CSV file, for connector-shell (docs/shell-connector.md).

The file is CSV_PATH (from the environment); its columns are id, userName, displayName,
givenName, familyName, email, active. One script serves export and import:

- export: applies the batch to the file under a lock, written to a temporary file and renamed
  over the old one, so a reader never sees half a file; one result line per entry.
- import, full: the rows, a page at a time (the cursor is the row offset).
- import, delta: nothing when the file has not been modified since the last run (the watermark
  is its modification time); otherwise what differs from the snapshot the last run left beside
  the file (CSV_PATH.snapshot.json): changed or new rows as "replace", missing ones as "delete".

Values are written as they arrive, whatever they hold: quotes, newlines, $(...) and backticks
are data (the csv module quotes them; nothing here runs a shell).
"""

import csv
import fcntl
import json
import os
import sys
import tempfile
import uuid

COLUMNS = ["id", "userName", "displayName", "givenName", "familyName", "email", "active"]


def log(message):
    print(message, file=sys.stderr, flush=True)


def out(line):
    sys.stdout.write(json.dumps(line) + "\n")


def csv_path():
    path = os.environ.get("CSV_PATH")
    if not path:
        out({"error": {"kind": "invalid_configuration", "message": "CSV_PATH is not set"}})
        sys.exit(78)
    return path


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".csv-users-")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cell(values):
    """The CSV cell for an attribute's values (one value; booleans as true/false)."""
    if not values:
        return ""
    value = values[0]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def export(request, path):
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_rows(path)
        by_id = {row["id"]: row for row in rows}
        for entry in request["entries"]:
            identifier = entry["identifier"]
            attributes = entry["attributes"]
            kind = entry["modification"]
            try:
                if kind == "add":
                    name = cell(attributes.get("userName", []))
                    if any(r["userName"].lower() == name.lower() for r in rows):
                        out({"identifier": identifier,
                             "error": {"kind": "already_exists", "message": f"userName {name!r} is taken"}})
                        continue
                    row = {c: "" for c in COLUMNS}
                    row["id"] = str(uuid.uuid4())
                    for name, values in attributes.items():
                        if name in COLUMNS and name != "id":
                            row[name] = cell(values)
                    rows.append(row)
                    by_id[row["id"]] = row
                    out({"identifier": identifier, "anchor": row["id"]})
                elif kind in ("update", "replace"):
                    row = by_id.get(entry["anchor"])
                    if row is None:
                        out({"identifier": identifier,
                             "error": {"kind": "no_such_object", "message": f"no row {entry['anchor']}"}})
                        continue
                    if kind == "replace":
                        for c in COLUMNS[1:]:
                            row[c] = ""
                    for name, values in attributes.items():
                        if name in COLUMNS and name != "id":
                            row[name] = cell(values)
                    out({"identifier": identifier, "anchor": row["id"]})
                elif kind == "delete":
                    row = by_id.pop(entry["anchor"], None)
                    if row is None:
                        out({"identifier": identifier,
                             "error": {"kind": "no_such_object", "message": f"no row {entry['anchor']}"}})
                        continue
                    rows.remove(row)
                    out({"identifier": identifier})
                else:
                    out({"identifier": identifier,
                         "error": {"kind": "unsupported", "message": f"modification {kind}"}})
            except Exception as e:  # one entry's failure is its own
                out({"identifier": identifier, "error": {"kind": "internal", "message": str(e)}})
        write_rows(path, rows)


def typed(row, schema):
    """A row as import attributes, with the schema's types (booleans from true/false)."""
    types = {a["name"]: a["type"] for a in schema["attributes"]}
    attributes = {}
    for name in COLUMNS[1:]:
        value = row.get(name, "")
        if value == "" or name not in types:
            continue
        if types[name] == "boolean":
            value = value.strip().lower() in ("true", "1", "yes")
        attributes[name] = value
    return attributes


def import_page(request, path):
    imp = request["import"]
    size = imp["page_size"]
    offset = imp["cursor"] or 0
    snapshot_path = path + ".snapshot.json"
    mtime = str(os.stat(path).st_mtime_ns) if os.path.exists(path) else "0"
    rows = read_rows(path)
    if imp["type"] == "delta" and imp["watermark"] == mtime:
        out({"more": False, "watermark": mtime})
        return
    if imp["type"] == "delta" and os.path.exists(snapshot_path):
        with open(snapshot_path, encoding="utf-8") as f:
            before = json.load(f)
        now = {row["id"]: row for row in rows}
        changes = [{"anchor": i, "modification": "replace", "attributes": typed(r, request["schema"])}
                   for i, r in now.items() if before.get(i) != r]
        changes += [{"anchor": i, "modification": "delete"} for i in before if i not in now]
    else:
        changes = [{"anchor": r["id"], "attributes": typed(r, request["schema"])} for r in rows]
    for line in changes[offset:offset + size]:
        out(line)
    more = offset + size < len(changes)
    if more:
        out({"more": True, "cursor": offset + size})
        return
    # The run ends: what the next delta compares with.
    with open(snapshot_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({row["id"]: row for row in rows}, f)
    os.replace(snapshot_path + ".tmp", snapshot_path)
    out({"more": False, "watermark": mtime})


def main():
    request = json.load(sys.stdin)
    path = csv_path()
    operation = request["operation"]
    if operation == "export":
        export(request, path)
    elif operation == "import":
        import_page(request, path)
    elif operation == "validate":
        directory = os.path.dirname(os.path.abspath(path))
        if not os.access(directory, os.W_OK):
            out({"problem": f"{directory} is not writable", "parameter": "CSV_PATH"})
    else:
        out({"error": {"kind": "unsupported", "message": f"operation {operation}"}})
        sys.exit(1)


if __name__ == "__main__":
    main()
