"""An application factory: served as `factory:create_app()`."""

CALLS = []


def create_app():
    CALLS.append(1)

    def app(environ, start_response):
        body = b"made by create_app, calls=%d\n" % len(CALLS)
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app
