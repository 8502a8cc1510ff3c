"""Errors a user can fix, and the exit codes the command line gives for each kind of failure.

| exit | meaning |
|---|---|
| 0 | done |
| 1 | a user error: bad input, params or environment; the message names the file or key and the fix |
| 2 | a usage error: an unknown command or option, a missing argument (the command line's own) |
| 3 | a server is unavailable: the tracking server, the registry, or the local stack is not running |
| 4 | an internal error: a bug; the traceback is printed, please report it |
| 130, 143 | stopped by Ctrl-C (SIGINT) or SIGTERM |
"""

EXIT_USER, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERNAL = 1, 2, 3, 4


class UserError(Exception):
    """Bad input, params or environment. The message names the file or key and says how to fix it."""

    exit_code = EXIT_USER


class ServiceUnavailable(UserError):
    """A server this command needs does not answer; the message names it and says how to start or reach it."""

    exit_code = EXIT_UNAVAILABLE
