"""The one error type the command line turns into a single line and exit code 2, and the checks that raise it."""


class UsageError(ValueError):
    """Bad input: an impossible config, an unknown name, a missing device or file.

    The message names the bad value and what is allowed; the CLI prints it as one line on stderr and
    exits with code 2, without a traceback.
    """


def check_int(name: str, value, minimum: int) -> int:
    """`value` if it is an integer >= `minimum` (bools excluded), else a `UsageError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}={value!r}: {name} must be an integer >= {minimum}")
    return value


def check_choice(name: str, value, allowed) -> str:
    """`value` if it is one of `allowed`, else a `UsageError` naming it and the choices."""
    if value not in allowed:
        raise UsageError(f"{name} {value!r}: choose one of {', '.join(allowed)}")
    return value


def describe_error(error: BaseException) -> str:
    """One line for a record: the exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def options_from(cls, options, fields: dict, function: str):
    """The options of an API call: `options` (an instance of the dataclass `cls`) or `cls(**fields)` from
    keywords, never both; an unknown keyword is a UsageError listing the allowed ones."""
    import dataclasses

    if options is not None and fields:
        raise UsageError(f"{function}(): pass options={cls.__name__}(...) or keyword options, not both "
                         f"(got {sorted(fields)})")
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise UsageError(f"{function}(): unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return options or cls(**fields)
