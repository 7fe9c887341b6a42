"""An application with lazy, thread-unsafe first-use initialisation, like Keystone's policy
enforcer: the first request builds shared state, and a second request that arrives while
the first is still building it sees a half-built object and fails.

`/` answers 200 once the state is complete, 500 if it was entered mid-build.
`/concurrency` says how many requests the application ran at once, at most, so far, and
how many entered while the state was being built.
"""

import json
import threading
import time

_state = None
_building = False
_lock = threading.Lock()
_active = 0
_max_active = 0
_entered_while_building = 0


def _enforcer():
    global _state, _building, _entered_while_building
    if _state is not None:
        return _state
    if _building:
        _entered_while_building += 1
        raise RuntimeError("policy enforcer used while another request is building it")
    _building = True
    time.sleep(0.2)  # reading policy files, compiling rules...
    _state = {"rules": ["admin_required", "owner"]}
    _building = False
    return _state


def app(environ, start_response):
    global _active, _max_active
    with _lock:
        _active += 1
        _max_active = max(_max_active, _active)
    try:
        if environ["PATH_INFO"] == "/concurrency":
            body = json.dumps(
                {"max_active": _max_active, "entered_while_building": _entered_while_building}
            ).encode()
        else:
            rules = _enforcer()["rules"]
            time.sleep(0.005)  # a query to the database
            body = json.dumps({"rules": len(rules)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    finally:
        with _lock:
            _active -= 1
