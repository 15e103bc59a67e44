"""Errors that mean "the caller sent something we cannot use" (-> INVALID_ARGUMENT / CLI exit 2)."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input. `field` names the request field (e.g. "photo", "script") for BadRequest details.

    `violations` holds every (field, message) pair when several fields were checked at once;
    `field`/`message` are the first of them.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.violations: list[tuple[str, str]] = [(field, message)]

    @classmethod
    def many(cls, violations: list[tuple[str, str]]) -> "InputError":
        error = cls(*violations[0])
        error.violations = list(violations)
        return error


class ModelUnavailable(RuntimeError):
    """The model server could not be reached after retries (-> gRPC UNAVAILABLE)."""


class StorageUnavailable(RuntimeError):
    """Object storage could not be reached after retries (-> gRPC UNAVAILABLE: try again later)."""


class NotFound(LookupError):
    """A referenced thing (job, asset) does not exist (-> gRPC NOT_FOUND)."""
