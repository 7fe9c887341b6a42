"""A small Flask JSON API: the shape of a typical service endpoint.

Run it (Flask must be importable, e.g. from a virtualenv):

    python3 -m venv .venv && .venv/bin/pip install flask
    cargo run --release -- --virtualenv .venv examples/flask_app.py:app

then:

    curl http://127.0.0.1:8000/items
    curl http://127.0.0.1:8000/items/1
    curl -X POST -H 'Content-Type: application/json' -d '{"name": "spoon"}' \\
        http://127.0.0.1:8000/items
"""

import threading

from flask import Flask, abort, jsonify, request

app = Flask(__name__)

_lock = threading.Lock()
_items = {1: {"id": 1, "name": "hammer"}, 2: {"id": 2, "name": "chisel"}}


@app.get("/")
def index():
    return jsonify(service="spillway-example", routes=["/items", "/items/<id>"])


@app.get("/items")
def list_items():
    with _lock:
        items = sorted(_items.values(), key=lambda item: item["id"])
    return jsonify(items=items)


@app.get("/items/<int:item_id>")
def get_item(item_id):
    with _lock:
        item = _items.get(item_id)
    if item is None:
        abort(404)
    return jsonify(item)


@app.post("/items")
def create_item():
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return jsonify(error="expected a JSON object with a string 'name'"), 400
    with _lock:
        item_id = max(_items, default=0) + 1
        item = dict(payload, id=item_id)
        _items[item_id] = item
    return jsonify(item), 201


@app.errorhandler(404)
def not_found(error):
    return jsonify(error="not found", path=request.path), 404
