"""Errors a user can fix: each message is one line that names the key, file or row at fault."""


class RecipeError(ValueError):
    """Base class: stage scripts print the message on one line and exit with status 2."""


class ConfigError(RecipeError):
    """A recipe or command line that cannot be used."""


class DataError(RecipeError):
    """A dataset that cannot be used: unknown format, malformed row, missing column."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors run to many lines), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
