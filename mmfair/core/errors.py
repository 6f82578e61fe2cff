"""Errors a user can act on. The CLI turns them into a one-line message and exit code 2."""


class MmfairError(Exception):
    """A problem with the user's input or configuration, described in words a user can act on.

    The message must name the file, column and value involved where there is one.
    """


class InputFileError(MmfairError):
    """A required input file is missing, unreadable, or has the wrong shape."""


class ConfigError(MmfairError):
    """An option or config value is invalid or inconsistent with another."""
