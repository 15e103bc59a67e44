"""Errors that mean "the caller sent something we cannot use" (-> INVALID_ARGUMENT / CLI exit 2)."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input. `field` names the request field (e.g. "photo", "script") for BadRequest details."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
