"""Spillway worker bootstrap: prepares sys.path and loads the WSGI application.

Embedded in the worker module. Python code, not Rust, because loading an app is import
machinery through and through, and errors must surface as ordinary Python tracebacks.
"""
import ast
import importlib
import importlib.util
import os
import sys


def prepare(argv0, pythonpath):
    """Give the application the interpreter state it would have under `python app.py`.

    The worker runs in the application's own interpreter (its virtualenv's python), so
    sys.executable, sys.prefix and site-packages are already that interpreter's."""
    # A crash (a segfault in a C extension, or a fatal signal the application sends itself)
    # prints every thread's Python traceback, then kills the worker as the signal would:
    # the front sees it die and replaces it.
    import faulthandler

    faulthandler.enable(all_threads=True)
    # OpenStack services parse sys.argv at import (oslo.config): never show them our flags.
    sys.argv = [argv0]
    # The worker starts as `python -c`, which puts "" (the working directory) first; like
    # `python -m`, name the directory itself, so a later chdir changes nothing.
    cwd = os.getcwd()
    sys.path[:] = [cwd if p == "" else p for p in sys.path]
    for p in reversed(pythonpath):
        sys.path.insert(0, os.path.abspath(p))
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # The worker's own start-up code lives in __main__ (`-c`); the application gets a clean one.
    main = sys.modules.get("__main__")
    if main is not None:
        for name in [n for n in vars(main) if n.startswith("_") and not n.startswith("__")]:
            delattr(main, name)


def _resolve(mod, node, spec):
    if isinstance(node, ast.Name):
        return getattr(mod, node.id)
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(mod, node.value, spec), node.attr)
    raise ValueError("APP %r: %r is not a name or dotted name" % (spec, ast.dump(node)))


def load(spec):
    """Load `module:callable`, `module:factory(args)` or `path/to/file.py:callable`."""
    if ":" in spec:
        module_part, obj_part = spec.rsplit(":", 1)
    else:
        module_part, obj_part = spec, "application"
    if not module_part or not obj_part:
        raise ValueError("APP %r: expected module:callable" % spec)
    if module_part.endswith(".py") or os.sep in module_part:
        path = os.path.abspath(module_part)
        if not os.path.isfile(path):
            raise FileNotFoundError("APP %r: no such file %s" % (spec, path))
        name = os.path.splitext(os.path.basename(path))[0]
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        mspec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(mspec)
        sys.modules[name] = mod
        mspec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module_part)
    try:
        expr = ast.parse(obj_part.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError("APP %r: %r is not a callable name or factory call" % (spec, obj_part))
    if isinstance(expr, ast.Call):
        args = [ast.literal_eval(a) for a in expr.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in expr.keywords}
        app = _resolve(mod, expr.func, spec)(*args, **kwargs)
    else:
        app = _resolve(mod, expr, spec)
    if not callable(app):
        raise TypeError(
            "APP %r: %s is a %s, not a WSGI callable" % (spec, obj_part, type(app).__name__)
        )
    return app


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks and forwards close()."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def format_exception(exc, tb=None):
    import traceback

    tb = tb if tb is not None else exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


class RequestTimeout(BaseException):
    """Raised inside a request's thread when it ran past spillway's --timeout (the client
    already got 504). A BaseException, like KeyboardInterrupt, so that an application's
    `except Exception:` does not swallow it and the thread returns to the pool."""


class ClientDisconnected(OSError):
    """wsgi.input was read after the client went away, or sent a body that broke HTTP's
    framing rules: the client's failure, not the application's."""
