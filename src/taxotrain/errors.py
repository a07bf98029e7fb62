"""The one exception base of taxotrain: an error the user can fix, whose message is a single line.

Every module's own error class (``ConfigError``, ``IngestError``, ``StoreError``, ``RunError``, ...) derives from
:class:`TaxotrainError`; the command line prints its message as ``taxotrain <command>: error: <message>`` and exits
with status 2, so a new error class needs no change to the CLI.
"""

from __future__ import annotations


class TaxotrainError(ValueError):
    """A problem with the user's input (config, data, run folder, checkpoint) that the message says how to fix."""
