"""The project's own error types: what the command line reports as a user error (exit 2).

Library code raises these (or plain ``ValueError`` / ``FileNotFoundError`` for bad
input); anything else — ``TypeError``, ``KeyError``, ``RuntimeError`` … — is a bug
and surfaces with its traceback.
"""

from __future__ import annotations

__all__ = [
    "OverinterpError",
    "UserInputError",
    "InputNotFoundError",
    "OutputError",
    "LockHeldError",
    "IntegrityError",
    "USER_ERRORS",
]


class OverinterpError(Exception):
    """Base class of overinterp's own errors."""


class UserInputError(OverinterpError, ValueError):
    """A spec, option or file the user gave is not valid (the message says why).

    ``argument``: the library argument at fault (e.g. ``"database_url"``). The message
    itself does not name it: ``str()`` prefixes it (``database_url: …``), and the
    command line prefixes the flag it maps that argument to instead (``--database: …``).
    """

    def __init__(self, message: str = "", *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument
        self.message = message

    def __str__(self) -> str:
        return f"{self.argument}: {self.message}" if self.argument else self.message


class InputNotFoundError(UserInputError, FileNotFoundError):
    """A file or record the user named does not exist (``argument`` as in :class:`UserInputError`)."""


class OutputError(OverinterpError, OSError):
    """A file could not be written (disk full, read-only, …); the message names it and says
    what finished work was kept. ``errno``/``filename`` as for ``OSError``."""

    def __init__(self, code: int, message: str, filename: str | None = None) -> None:
        super().__init__(code, message, filename)

    def __str__(self) -> str:
        return str(self.strerror)


class LockHeldError(OverinterpError):
    """Another live process holds the lock of a folder or file this one would write
    (``holder``: its recorded ``pid``, ``host`` and ``since``; ``path``: the lock file)."""

    def __init__(self, message: str, *, path: object = None, holder: dict | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = dict(holder or {})


class IntegrityError(OverinterpError, ValueError):
    """A file the project wrote no longer matches the content hash it was written with."""


#: Exceptions the command line prints as ``overinterp CMD: error: …`` with exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    OverinterpError,
    ValueError,
    OutputError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FloatingPointError,
)
