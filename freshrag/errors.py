"""Errors that cross layers: raised by the composition root, answered by the HTTP layer."""


class GenerationError(Exception):
    """An operation the generations' state does not allow now (the API answers 409)."""
