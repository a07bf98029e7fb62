"""The one exception base of taxotrain: an error the user can fix, whose message is a single line.

Every module's own error class (``ConfigError``, ``IngestError``, ``StoreError``, ``RunError``, ...) derives from
:class:`TaxotrainError`; the command line prints its message as ``taxotrain <command>: error: <message>`` and exits
with status 2, so a new error class needs no change to the CLI.
"""

from __future__ import annotations


class TaxotrainError(ValueError):
    """A problem with the user's input (config, data, run folder, checkpoint) that the message says how to fix."""


def brief(exc: BaseException | str, limit: int = 160) -> str:
    """The first line of an exception's message, cut at a word boundary (with "...") when longer than ``limit``, for
    quoting a library's error inside a one-line message."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else (type(exc).__name__ if isinstance(exc, BaseException) else "")
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
