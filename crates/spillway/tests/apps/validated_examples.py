"""The repository's examples (examples/*.py), each wrapped in wsgiref.validate.validator."""

import importlib.util
import os
import warnings
from wsgiref.validate import validator

warnings.simplefilter("error")

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "examples")


def load(name):
    spec = importlib.util.spec_from_file_location("example_" + name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


hello = validator(load("hello"))
slow = validator(load("slow"))
stream = validator(load("stream"))


def flask():
    """Factory, so importing this module does not need Flask."""
    return validator(load("flask_app"))
