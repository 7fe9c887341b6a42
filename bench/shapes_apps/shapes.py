"""The application shapes of bench/shapes (issue 17): what a request waits on decides
whether more threads help. Each is a WSGI app named after its shape:

* `wait`   - a scalable wait of WAIT_MS (default 10) ms: a remote service with capacity to
             spare; more threads help until the host runs out.
* `sqlite` - one INSERT per request into a SQLite file shared by every worker and thread
             (SQLITE_PATH), Python's sqlite3 with its default 5 s busy timeout: writers queue
             on the file lock, and past it they fail with "database is locked" (500).
* `dbpool` - a pool of POOL_SIZE (default 5) connections per process around a 10 ms query,
             with a POOL_TIMEOUT (default 2) s wait for a connection, as SQLAlchemy's
             QueuePool (oslo.db's max_pool_size is 5): past its timeout, a 500.
* `lock`   - a global application lock around 5 ms of waiting (a non-thread-safe client).
* `hello`  - answers at once.

    cargo run --release -- --workers 2 bench/shapes_apps/shapes.py:sqlite
"""

import os
import queue
import sqlite3
import threading
import time

_BODY = b"ok\n"


def _answer(start_response, status="200 OK", body=_BODY):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def wait(environ, start_response):
    time.sleep(int(os.environ.get("WAIT_MS", "10")) / 1000.0)
    return _answer(start_response)


_SQLITE = os.environ.get("SQLITE_PATH", "/tmp/spillway-shapes.sqlite3")


def sqlite(environ, start_response):
    # A connection per request, as many applications open them (default timeout: 5 s).
    try:
        db = sqlite3.connect(_SQLITE)
        try:
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, at REAL)")
                db.execute("INSERT INTO items (at) VALUES (?)", (time.time(),))
        finally:
            db.close()
    except sqlite3.OperationalError as e:
        return _answer(start_response, "500 Internal Server Error", (str(e) + "\n").encode())
    return _answer(start_response)


_POOL_SIZE = int(os.environ.get("POOL_SIZE", "5"))
_POOL_TIMEOUT = float(os.environ.get("POOL_TIMEOUT", "2"))
_pool = queue.Queue()
for _i in range(_POOL_SIZE):
    _pool.put(object())


def dbpool(environ, start_response):
    try:
        conn = _pool.get(timeout=_POOL_TIMEOUT)
    except queue.Empty:
        return _answer(start_response, "500 Internal Server Error", b"pool timeout\n")
    try:
        time.sleep(0.010)  # the query
    finally:
        _pool.put(conn)
    return _answer(start_response)


_lock = threading.Lock()


def lock(environ, start_response):
    with _lock:
        time.sleep(0.005)
    return _answer(start_response)


def hello(environ, start_response):
    return _answer(start_response, body=b"Hello, world!\n")
