"""The one shape of refused input that belongs to a field of a form or an API body."""

from __future__ import annotations


class FieldError(ValueError):
    """`field` names where the error is shown (next to the input, or `error` in JSON);
    `message` is the sentence the user reads. Answered with 400 (mailing/errors.py)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class Conflict(FieldError):
    """Input that is well formed but clashes with what exists (a name already taken, a list
    still in use): answered with 409, `field` naming what clashes."""
