"""The one exception type that callers of `core` need to catch for bad input."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input (image, metadata, path, CSV). Its message is written for a person to read."""
