"""wsgi.file_wrapper with a real file (path in the query) and with a BytesIO."""

import io
import os
from urllib.parse import parse_qs


class RecordingFile(io.FileIO):
    def close(self):
        path = os.environ.get("CLOSE_LOG")
        if path and not self.closed:
            with open(path, "a") as f:
                f.write("file closed\n")
        super().close()


def app(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    wrapper = environ["wsgi.file_wrapper"]
    if environ.get("PATH_INFO") == "/bytesio":
        data = b"0123456789abcdef" * 4096
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return wrapper(io.BytesIO(data), 8192)
    f = RecordingFile(q["path"], "r")
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return wrapper(f, 8192)
