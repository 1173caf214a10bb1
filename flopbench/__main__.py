"""`python -m flopbench` and the `flopbench` command (`program`)."""

import sys


def program() -> int:
    """Run the command line. A Ctrl-C while Python reads flopbench's own modules, before `cli.main` has
    started, gets the same line and exit code 130 as one later."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("flopbench: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(program())
