"""The project's own error types: what the command line reports as a user error (exit 2).

Library code raises these (or plain ``ValueError`` / ``FileNotFoundError`` for bad
input); anything else — ``TypeError``, ``KeyError``, ``RuntimeError`` … — is a bug
and surfaces with its traceback.
"""

from __future__ import annotations

__all__ = ["OverinterpError", "UserInputError", "LockHeldError", "USER_ERRORS"]


class OverinterpError(Exception):
    """Base class of overinterp's own errors."""


class UserInputError(OverinterpError, ValueError):
    """A spec, option or file the user gave is not valid (the message says why)."""


class LockHeldError(OverinterpError):
    """Another live process holds the lock of a folder or file this one would write
    (``holder``: its recorded ``pid``, ``host`` and ``since``; ``path``: the lock file)."""

    def __init__(self, message: str, *, path: object = None, holder: dict | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = dict(holder or {})


#: Exceptions the command line prints as ``overinterp CMD: error: …`` with exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    OverinterpError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FloatingPointError,
)
