"""The project's own exceptions.

Library code raises these with a message a user can act on (which file, which
record, what is wrong); the CLI turns them into one line and an exit code, so a
traceback only ever means a bug.
"""


class LenetEdgeError(Exception):
    """Base class: a problem with the user's input, not a bug."""

    exit_code = 1


class DataError(LenetEdgeError):
    """A dataset that cannot be read: missing, truncated, corrupt, or mislabelled."""


class ModelError(LenetEdgeError):
    """A model, run directory or manifest that cannot be used as asked."""


class DownloadError(LenetEdgeError):
    """A download that failed, was truncated, or did not verify."""
