"""The error types the CLI turns into a one-line message."""


class EssencekitError(Exception):
    """A problem the user can fix; the message says what happened and what to do.

    The CLI prints ``str(error)`` on one line and exits with status 1, so messages name the
    file involved and the fix, and never rely on a traceback for context.
    """


class OptionError(EssencekitError, ValueError):
    """A parameter value that cannot work: a usage error.

    ``parameter`` is the Python API's name for it (``"steps"``, ``"strength"``), and the message
    speaks of that name, never of a command-line flag: a Python caller has no flags. The CLI maps
    ``parameter`` to the command's flag (``--steps``), prints the message as a usage error and
    exits with status 2. A ``ValueError`` too, as Python callers expect of a bad argument.
    """

    def __init__(self, message: str, *, parameter: str):
        super().__init__(message)
        self.parameter = parameter


def first_line(error: BaseException, *, limit: int | None = 200, typed: bool = False) -> str:
    """The first line of ``error``'s message, for a one-line report of an error from a library
    (its type's name where the message is empty). ``typed`` puts the type's name in front, for
    errors whose message alone says too little (a plugin's ``KeyError: 'x'``); ``limit`` cuts
    a message that quotes a whole file or response; ``None`` for a caller that must see all of
    the line before cutting it (download redacts URLs first)."""
    lines = str(error).strip().splitlines()
    name = type(error).__name__
    text = (f"{name}: {lines[0]}" if typed else lines[0]) if lines else name
    return text if limit is None else text[:limit]
