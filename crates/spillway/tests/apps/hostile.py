"""Applications that misbehave, for the hardening tests; the route (PATH_INFO) picks how.

Every call is recorded (one line "<path> <pid>") in $TEST_DIR/calls, and a process this
app starts is recorded in $TEST_DIR/children, so a test can find and clean it up.

GET  /pid                  answer with the worker's pid
GET  /exit-with-child      start `sleep 30` with every fd inherited, then os._exit(1)
GET  /exit-with-fork       fork a child that sleeps 30 s (it holds every fd), then os._exit(1)
GET  /fork                 fork; parent and child both return from the application
GET  /segv                 send itself SIGSEGV
GET  /spin                 a pure-Python busy loop for up to 120 s (interruptible)
GET  /regex                a catastrophic regular expression: C code holding the GIL
GET  /sleep-in-c           time.sleep(120): C code that releases the GIL
POST /upload               read the whole body; answer its length and when reading began
ANY  /raise...             raise ValueError naming PATH_INFO (which the client controls)
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

DIR = os.environ.get("TEST_DIR", ".")


def _record(name, line):
    with open(os.path.join(DIR, name), "a") as f:
        f.write(line + "\n")


def _answer(start_response, obj, status="200 OK"):
    data = json.dumps(obj).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    _record("calls", "%s %d" % (path.encode("unicode_escape").decode(), os.getpid()))
    if path == "/pid":
        return _answer(start_response, {"pid": os.getpid()})
    if path == "/exit-with-child":
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
        _record("children", str(child.pid))
        os._exit(1)
    if path == "/exit-with-fork":
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        _record("children", str(pid))
        os._exit(1)
    if path == "/fork":
        pid = os.fork()
        if pid:
            _record("children", str(pid))
        return _answer(start_response, {"pid": os.getpid(), "child": pid})
    if path == "/segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
        return _answer(start_response, {"survived": os.getpid()})
    if path == "/spin":
        try:
            deadline = time.monotonic() + 120
            n = 0
            while time.monotonic() < deadline:
                n += 1
        finally:
            _record("calls", "/spin-finally %d" % os.getpid())
        return _answer(start_response, {"spun": n})
    if path == "/regex":
        re.match(r"(a+)+$", "a" * 64 + "b")
        return _answer(start_response, {"matched": True})
    if path == "/sleep-in-c":
        time.sleep(120)
        return _answer(start_response, {"slept": True})
    if path == "/upload":
        began = time.time()
        data = environ["wsgi.input"].read()
        return _answer(
            start_response, {"length": len(data), "began": began, "ended": time.time()}
        )
    if path.startswith("/raise"):
        raise ValueError("cannot handle %s" % path)
    return _answer(start_response, {"error": "no route %r" % path}, "404 Not Found")


if __name__ == "__main__":
    sys.exit("run me with spillway")
