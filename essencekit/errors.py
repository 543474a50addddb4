"""The one exception type the CLI turns into a one-line error message."""


class EssencekitError(Exception):
    """A problem the user can fix; the message says what happened and what to do.

    The CLI prints ``str(error)`` on one line and exits with status 1, so messages name the
    file involved and the fix, and never rely on a traceback for context.
    """
