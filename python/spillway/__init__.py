"""Spillway: an application server for Python WSGI web APIs.

The `spillway` command runs the front from this interpreter (the GIL released for as long as
it runs; the application is never imported here). Its workers run this interpreter too,
unless --python or --virtualenv names another, and load the same extension module.
"""

import sys

from spillway import _spillway

__version__ = _spillway.__version__


def main():
    """The `spillway` console script."""
    sys.exit(_spillway.main(sys.argv, sys.executable, _spillway.__file__))
