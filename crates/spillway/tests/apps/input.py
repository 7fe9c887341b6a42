"""Exercises wsgi.input; the route (PATH_INFO) picks the behaviour, the answer is JSON."""

import json
import os
import zlib
from urllib.parse import parse_qs


def arg(environ, name, default):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    return int(q[name][0]) if name in q else default


def l1(b):
    return b.decode("latin-1")


def after_eof(inp):
    """What reading at EOF gives, three ways."""
    return [len(inp.read()), len(inp.read(5)), len(inp.readline())]


def app(environ, start_response):
    inp = environ["wsgi.input"]
    path = environ.get("PATH_INFO", "")
    out = {
        "path": path,
        "content_length": environ.get("CONTENT_LENGTH"),
        "input_terminated": environ.get("wsgi.input_terminated"),
    }
    if path == "/read_n":
        n = arg(environ, "n", 3)
        sizes, data = [], b""
        for _ in range(1_000_000):
            piece = inp.read(n)
            if not piece:
                break
            sizes.append(len(piece))
            data += piece
        out.update(sizes=sizes, body=l1(data), after_eof=after_eof(inp))
    elif path == "/read_all":
        data = inp.read()
        out.update(body=l1(data), after_eof=after_eof(inp))
    elif path == "/read_none_arg":
        data = inp.read(None) if arg(environ, "none", 1) else inp.read(-1)
        out.update(body=l1(data), after_eof=after_eof(inp))
    elif path == "/readline":
        n = arg(environ, "n", -1)
        lines = []
        for _ in range(1_000_000):
            line = inp.readline(n) if n >= 0 else inp.readline()
            if not line:
                break
            lines.append(l1(line))
        out.update(lines=lines, after_eof=after_eof(inp))
    elif path == "/readlines":
        out.update(lines=[l1(x) for x in inp.readlines()], after_eof=after_eof(inp))
    elif path == "/iter":
        out.update(lines=[l1(x) for x in inp], after_eof=after_eof(inp))
    elif path == "/mixed":
        a = inp.read(3)
        b = inp.readline()
        c = inp.read()
        out.update(parts=[l1(a), l1(b), l1(c)], after_eof=after_eof(inp))
    elif path == "/hash":
        crc, total, reads = 0, 0, 0
        for _ in range(100_000_000):
            piece = inp.read(65536)
            if not piece:
                break
            reads += 1
            total += len(piece)
            crc = zlib.crc32(piece, crc)
        out.update(len=total, crc=crc, reads=reads, pid=os.getpid())
    elif path == "/noread":
        out.update(read=False)
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
