"""The one error type the command line turns into a single line and exit code 2."""


class UsageError(ValueError):
    """Bad input: an impossible config, an unknown name, a missing device or file.

    The message names the bad value and what is allowed; the CLI prints it as one line on stderr and
    exits with code 2, without a traceback.
    """
