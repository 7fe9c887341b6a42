#!/usr/bin/env python3
"""Serve examples/slow.py:app with wsgiref.simple_server, as `python3 -m wsgiref.simple_server`
would serve its demo app: one process, one thread, HTTP/1.0 (a connection per request), and
socketserver's listen() backlog of 5 (`TCPServer.request_queue_size`). That backlog is the
point: it is the server of the incident in issue 3 that bench/incident reproduces.

    python3 bench/incident_wsgiref.py PORT [HOST]
"""

import importlib.util
import sys
from pathlib import Path
from wsgiref.simple_server import make_server

APP = Path(__file__).resolve().parent.parent / "examples" / "slow.py"


def main():
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    spec = importlib.util.spec_from_file_location("slow", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    httpd = make_server(host, port, module.app)
    print(f"wsgiref.simple_server on {host}:{port}, listen backlog {httpd.request_queue_size}, "
          f"app {APP}:app", file=sys.stderr, flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
