"""Optional dependencies: one error type for "this feature needs an extra
that is not installed", so every entry point reports it in one line."""
import importlib


class MissingExtra(ImportError):
    """An optional dependency that the asked-for feature needs is not installed."""


def require(module: str, why: str):
    """``import module``, or ``MissingExtra(why + what failed)``. ``why`` names
    the feature and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"{why} (cannot import {module}: {err})") from None
