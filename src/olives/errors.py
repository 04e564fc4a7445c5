"""The one base class of input errors.

An `InputError` is caused by what the user gave (a parameter, a file, a row, a column, a server
address), not by a bug: the command line prints its message as one line and exits non-zero
(`-v` shows the traceback). Every module's input errors derive from it, so a new one cannot be
forgotten by the CLI.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input; the message names the parameter, file, row or column."""
