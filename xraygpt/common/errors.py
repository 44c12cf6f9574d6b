"""The project's own errors, and how entry points report them.

Every error the project raises on purpose (a config key, a registry name, a
missing file, a bad checkpoint, bad data) derives from :class:`XrayGPTError`,
and its message alone says what is wrong and what to do. Entry points run
their ``main`` through :func:`run_main`, which prints such an error as one
line and exits with status 2; the traceback, which only repeats the message
for these errors, is shown with ``--debug`` on the command line or
``XRAYGPT_DEBUG=1`` in the environment. Any other exception is a bug or an
unforeseen failure and keeps its full traceback.

Each concrete error also derives from the builtin type it used to be
(``ValueError``, ``KeyError``, ``FileNotFoundError``, ``RuntimeError``), so code
that catches those keeps working.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: Set to 1 (or any value but 0 / empty) to see tracebacks of the project's own errors.
DEBUG_ENV = "XRAYGPT_DEBUG"
DEBUG_FLAG = "--debug"
#: Exit status of an entry point stopped by one of the project's own errors.
EXIT_ERROR = 2


class XrayGPTError(Exception):
    """Base of the errors the project raises on purpose, each with a message that says
    what is wrong and how to fix it."""


class MissingFileError(XrayGPTError, FileNotFoundError):
    """A file or folder that a config or command line names does not exist."""


class CheckpointError(XrayGPTError, RuntimeError, ValueError):
    """A checkpoint that cannot be used: empty, truncated, not ``weights_only``-safe, or
    holding keys or shapes that do not fit the model. (A ``RuntimeError`` as loading
    errors were, and a ``ValueError`` as mismatches were.)"""


class UsageError(XrayGPTError, ValueError):
    """A command-line flag that cannot be used as given (a device, a size)."""


class OutputExistsError(XrayGPTError, FileExistsError):
    """An output folder that already holds the results of another run."""


class DiskFullError(XrayGPTError, OSError):
    """A file could not be written for want of space; the previous version is untouched.

    Raised as ``DiskFullError(errno.ENOSPC, message)``; prints as the message alone.
    """

    def __str__(self) -> str:
        return str(self.strerror)


class DataError(XrayGPTError, ValueError):
    """Data that cannot be used as it stands (annotations, images, predictions)."""


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """``--debug`` among the arguments, or ``XRAYGPT_DEBUG`` set to a true value."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return DEBUG_FLAG in argv or env not in ("", "0", "false", "no")


def run_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run an entry point's ``main(argv)``; the exit status to pass to ``sys.exit``.

    ``--debug`` is taken out of ``argv`` before ``main`` parses it. An
    :class:`XrayGPTError` prints ``error: <message>`` on stderr and gives
    status 2, unless debugging was asked for, when it propagates with its
    traceback. ``main``'s return value is the status when it is an int, else 0.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        result = main(args)
    except XrayGPTError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        print(
            f"(the traceback: add {DEBUG_FLAG} or set {DEBUG_ENV}=1)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
