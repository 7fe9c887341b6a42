"""An OpenStack-style REST API on SQLite, for the `api` shape of bench/shapes (issue 17).

Flask, a `servers` collection in one SQLite file shared by every worker and thread
(SQLITE_PATH), a connection per request with Python's default 5 s busy timeout, as a test
cloud's Keystone or Nova API on SQLite does:

* `GET /v2/servers`  - the 20 newest servers, as JSON;
* `POST /v2/servers` - creates one from `{"server": {"name": ...}}`: 202 and the server.

Readers share the file; a writer takes it alone, and past the busy timeout a request fails
with "database is locked" (500). The shape drives it with new connections, GET:POST 3:1.

    cargo run --release -- --workers 2 --virtualenv target/shapes-venv bench/shapes_apps/api.py:app
"""

import os
import sqlite3
import time
import uuid

from flask import Flask, jsonify, request

app = Flask(__name__)
_PATH = os.environ.get("SQLITE_PATH", "/tmp/spillway-shapes-api.sqlite3")


def _db():
    db = sqlite3.connect(_PATH)
    db.row_factory = sqlite3.Row
    return db


def _init():
    with _db() as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS servers (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
            " status TEXT NOT NULL, created REAL NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS servers_created ON servers (created)")


_init()


@app.errorhandler(sqlite3.OperationalError)
def _locked(e):
    return jsonify(error={"code": 500, "message": str(e)}), 500


@app.get("/v2/servers")
def list_servers():
    db = _db()
    try:
        rows = db.execute(
            "SELECT id, name, status, created FROM servers ORDER BY created DESC LIMIT 20"
        ).fetchall()
    finally:
        db.close()
    return jsonify(servers=[dict(r) for r in rows])


@app.post("/v2/servers")
def create_server():
    body = request.get_json(silent=True) or {}
    name = str((body.get("server") or {}).get("name") or "server")
    server = {"id": str(uuid.uuid4()), "name": name, "status": "BUILD", "created": time.time()}
    db = _db()
    try:
        with db:
            db.execute(
                "INSERT INTO servers (id, name, status, created) VALUES (:id, :name, :status, :created)",
                server,
            )
    finally:
        db.close()
    return jsonify(server=server), 202
