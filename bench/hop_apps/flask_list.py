"""bench/hop's Flask application: a JSON list of 20 items, the shape of a typical
OpenStack-style list endpoint (routing, a lock around the store, a sort, about 1 KiB of JSON)."""

import threading

from flask import Flask, jsonify

app = Flask("flask_list")
_lock = threading.Lock()
_items = {i: {"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(1, 21)}


@app.get("/items")
def list_items():
    with _lock:
        rows = sorted(_items.values(), key=lambda item: item["id"])
    return jsonify(items=rows)
