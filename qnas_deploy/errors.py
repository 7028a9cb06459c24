"""Errors the CLI turns into one line and an exit code.

``BadInput`` (exit 2) is for anything the user handed us that we cannot use: a malformed
found.json, a missing image, a checkpoint that does not match its spec, an unwritable path.
Anything else that fails at run time is exit 1.
"""


class QnasError(Exception):
    """Base class of the errors this package raises on purpose."""

    exit_code = 1


class BadInput(QnasError):
    """The user's input cannot be used; the message names the input and what was expected."""

    exit_code = 2


class SpecError(BadInput):
    """A found.json (or an ArchSpec built in code) is not a valid architecture."""
