"""The one base class of errors a user can fix: the CLI prints their message, without a traceback."""


class UserError(Exception):
    """Bad input, params or environment. The message names the file or key and says how to fix it."""
