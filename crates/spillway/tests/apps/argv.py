"""Parses sys.argv at import time, like OpenStack services do with oslo.config.

If the server leaked its own flags into sys.argv, argparse exits during import."""

import argparse
import json
import sys

ARGV_AT_IMPORT = list(sys.argv)
argparse.ArgumentParser(prog="service").parse_args(sys.argv[1:])


def app(environ, start_response):
    data = json.dumps({"argv": list(sys.argv), "argv_at_import": ARGV_AT_IMPORT}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
