"""Errors that cross layers: raised by the composition root, answered by the HTTP layer."""


class GenerationError(Exception):
    """An operation the generations' state does not allow now (the API answers 409)."""


class TuneError(Exception):
    """A tune that cannot start now: one runs already, or the index is empty or too small
    to learn from (the API answers 409 with the reason)."""
