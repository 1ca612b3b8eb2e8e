#!/usr/bin/env python3
"""A small JSON-over-HTTP user service: the kind of home-grown API connector-shell drives.

    SERVICE_TOKEN=... python3 http_service.py PORT

Bearer-token auth; users kept in memory:

    GET    /health                      200 {"ok": true}
    GET    /users?offset=N&limit=M      200 {"users": [...], "total": T}   (in creation order)
    GET    /users/<id>                  200 user | 404
    POST   /users                       201 user (with its new "id") | 409 when userName is taken
    PATCH  /users/<id>                  200 user (the fields given are set; null clears)
    DELETE /users/<id>                  204 | 404
"""

import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = os.environ.get("SERVICE_TOKEN", "")
USERS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("http_service: " + (fmt % args) + "\n")

    def reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        if TOKEN and self.headers.get("Authorization") == "Bearer " + TOKEN:
            return True
        self.reply(401, {"error": "bad token"})
        return False

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def user_id(self):
        parts = urlparse(self.path).path.strip("/").split("/")
        return parts[1] if len(parts) == 2 and parts[0] == "users" else None

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            return self.reply(200, {"ok": True})
        if not self.authorized():
            return
        if url.path == "/users":
            query = parse_qs(url.query)
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", ["100"])[0])
            with LOCK:
                users = list(USERS.values())
            return self.reply(200, {"users": users[offset:offset + limit], "total": len(users)})
        with LOCK:
            user = USERS.get(self.user_id())
        return self.reply(200, user) if user else self.reply(404, {"error": "no such user"})

    def do_POST(self):
        if not self.authorized():
            return
        if urlparse(self.path).path != "/users":
            return self.reply(404, {"error": "no such path"})
        user = self.body()
        with LOCK:
            name = str(user.get("userName", "")).lower()
            if any(str(u.get("userName", "")).lower() == name for u in USERS.values()):
                return self.reply(409, {"error": "userName taken"})
            user["id"] = str(uuid.uuid4())
            USERS[user["id"]] = user
        self.reply(201, user)

    def do_PATCH(self):
        if not self.authorized():
            return
        changes = self.body()
        with LOCK:
            user = USERS.get(self.user_id())
            if user is None:
                return self.reply(404, {"error": "no such user"})
            for key, value in changes.items():
                if key == "id":
                    continue
                if value is None:
                    user.pop(key, None)
                else:
                    user[key] = value
        self.reply(200, user)

    def do_DELETE(self):
        if not self.authorized():
            return
        with LOCK:
            found = USERS.pop(self.user_id(), None)
        self.reply(204) if found else self.reply(404, {"error": "no such user"})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8088
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    sys.stderr.write(f"http_service: listening on 127.0.0.1:{port}\n")
    sys.stderr.flush()
    server.serve_forever()
