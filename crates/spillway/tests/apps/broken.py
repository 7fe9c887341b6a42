"""A module that cannot be imported."""

import spillway_test_no_such_module_xyz  # noqa: F401


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"unreachable"]
