"""Errors that reach a person: each says what was wrong and what to do.

Engine code raises ``FnwebError`` (or a subclass) for bad input; the CLIs print its
message on one line and exit with code 2, and the app shows it in the page. Any
other exception is a bug and keeps its traceback.
"""


class FnwebError(Exception):
    """A user-facing error with a message that explains the cause and the fix."""


class Stopped(FnwebError):
    """Raised inside a long job when its stop flag was set."""

    def __init__(self, message: str = "Stopped by request; nothing was saved."):
        super().__init__(message)
