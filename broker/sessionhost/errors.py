"""The one error the session host raises when the machine lets it down."""


class SessionHostError(Exception):
    """A session-host operation failed; the message says what an admin can do about it.

    Bad arguments (an invalid session name, an unknown kind) are programming errors and raise
    ValueError instead: retrying or fixing the host would not help them.
    """
