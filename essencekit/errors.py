"""The error types the CLI turns into a one-line message."""


class EssencekitError(Exception):
    """A problem the user can fix; the message says what happened and what to do.

    The CLI prints ``str(error)`` on one line and exits with status 1, so messages name the
    file involved and the fix, and never rely on a traceback for context.

    A message whose hint names a parameter (``use overwrite to replace them``) is a template
    with a ``{name}`` placeholder per parameter, and lists them in ``mentions``:
    ``EssencekitError("... use {overwrite} to replace them", mentions=("overwrite",))``.
    ``str(error)`` speaks of the Python name (``use overwrite to ...``), a :class:`Message`;
    the CLI renders each mentioned parameter as the invoked command's flag (``--overwrite``),
    so neither kind of caller is told of names it has no way to set. Literal braces in a
    template are doubled, as in :meth:`str.format`.
    """

    def __init__(self, message="", *args, mentions: tuple[str, ...] = ()):
        super().__init__(Message(message, mentions) if mentions else message, *args)

    def __str__(self) -> str:
        # the Message itself, not a plain copy, so the mentions travel on with the text (a
        # run's per-input failure keeps str(error), and the CLI renders it as flags)
        message = self.args[0] if len(self.args) == 1 else None
        return message if isinstance(message, Message) else super().__str__()


class Message(str):
    """A message mentioning parameters: reads with their Python names; :meth:`render` names
    them otherwise (the CLI: as flags). See :class:`EssencekitError`."""

    template: str
    mentions: tuple[str, ...]

    def __new__(cls, template: str, mentions: tuple[str, ...]):
        self = super().__new__(cls, template.format(**{name: name for name in mentions}))
        self.template, self.mentions = template, tuple(mentions)
        return self

    def render(self, name_of) -> str:
        """The message with each mentioned parameter named by ``name_of(parameter)``."""
        return self.template.format(**{name: name_of(name) for name in self.mentions})

    def __reduce__(self):  # survives a process pool (Message(text) alone would not rebuild)
        return (Message, (self.template, self.mentions))


class OptionError(EssencekitError, ValueError):
    """A parameter value that cannot work: a usage error.

    ``parameter`` is the Python API's name for it (``"steps"``, ``"strength"``), and the message
    speaks of that name, never of a command-line flag: a Python caller has no flags. The CLI maps
    ``parameter`` to the command's flag (``--steps``), prints the message as a usage error and
    exits with status 2. A ``ValueError`` too, as Python callers expect of a bad argument.
    """

    def __init__(self, message: str, *, parameter: str, mentions: tuple[str, ...] = ()):
        super().__init__(message, mentions=mentions)
        self.parameter = parameter


def braced(text: str) -> str:
    """``text`` (a path may hold braces) made literal inside a :class:`Message` template."""
    return text.replace("{", "{{").replace("}", "}}")


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
