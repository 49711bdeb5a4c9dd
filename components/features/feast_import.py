"""Importing Feast, an optional dependency, with one clear error when it is missing."""

from types import ModuleType

INSTALL_HINT = "pip install 'ctloop[feast]'"


class FeastMissingError(RuntimeError):
    """Feast is asked for but not installed: the environment, not the input, is at fault."""


def import_feast() -> ModuleType:
    """The `feast` module, imported on first use so that users without the extra never pay."""
    try:
        import feast
    except ImportError as error:
        raise FeastMissingError(
            f"the Feast integration needs the feast package, which is not installed "
            f"({error}); install it with {INSTALL_HINT}, or, in a pipeline, run the step in "
            "the component image with Feast (ctloop compile --feast-image)"
        ) from error
    return feast
