"""Exceptions: what the API said, never what the caller sent."""

from __future__ import annotations

from typing import Optional


class MirrorManagerError(Exception):
    """The API refused a call.

    ``status`` is the HTTP status, ``code`` the API's error code
    (``invalid_field``, ``not_found``, ``conflict``, ``unauthorized``, ...),
    ``field`` the request field at fault when there is one, ``message`` the
    API's explanation. Secrets the call carried never appear in any of them.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: Optional[str] = None,
        operation: str = "",
    ):
        self.status = status
        self.code = code
        self.field = field
        self.message = message
        self.operation = operation
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        return f"{where}{self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"field={self.field!r}, message={self.message!r})"
        )


class TransportError(MirrorManagerError):
    """mirrorhost could not be reached at all."""

    def __init__(self, message: str):
        super().__init__(status=0, code="unreachable", message=message)
