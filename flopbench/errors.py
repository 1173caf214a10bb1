"""The one error type the command line turns into a single line and exit code 2, and the checks that raise it.

Every public function checks its arguments by type before any work, here: the fields of its options
dataclass (`options_from`) or its own annotated parameters (`check_arguments`), each value against its
annotation (`check_types`): `int` is an integer (not a bool, not a float), `float` any real number but a
bool, `bool` only True or False, `str` only text, `X | None` also None, `tuple[X, ...]` a tuple or list of
X, a class (`Path`, `torch.device`, `collections.abc.Callable`) an instance of it.
"""

import collections.abc
import types
import typing


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


def _accepts(kind, value) -> bool:
    """True if `value` is of the annotated type `kind` (see the module docstring)."""
    origin = typing.get_origin(kind)
    if kind is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if kind is type(None) or kind is None:
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        item = typing.get_args(kind)[0] if typing.get_args(kind) else typing.Any
        return isinstance(value, (tuple, list)) and all(_accepts(item, v) for v in value)
    if origin is not None:  # another generic (dict[str, int], Callable[[int], None]): its container type
        return isinstance(value, origin)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _describe(kind) -> str:
    """What a value of the annotated type `kind` is, in words: "an integer", "a str or None"."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0] if typing.get_args(kind) else typing.Any
        return f"a tuple of {_describe(item).removeprefix('a ').removeprefix('an ')}s"
    words = {int: "an integer", float: "a number", bool: "True or False", str: "a str", type(None): "None",
             collections.abc.Callable: "a callable"}
    if kind in words:
        return words[kind]
    name = getattr(typing.get_origin(kind) or kind, "__name__", str(kind))
    return f"a{'n' if name[:1].lower() in 'aeiou' else ''} {name}"


def _shown(value) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_types(function: str, values: dict, hints: dict) -> None:
    """Raise a UsageError for the first of `values` (name -> value) that is not of its type in `hints`
    (name -> annotation; a name without one is not checked), naming the call, the value and the type."""
    for name, value in values.items():
        if name in hints and not _accepts(hints[name], value):
            raise UsageError(f"{function}(): {name}={_shown(value)} is not allowed: give {_describe(hints[name])}")


def check_arguments(function, arguments: dict) -> None:
    """Check the `arguments` (name -> value) of the public `function` against its annotations."""
    check_types(function.__name__, arguments, typing.get_type_hints(function))


def options_from(cls, options, fields: dict, function: str):
    """The options of an API call: `options` (an instance of the dataclass `cls`) or `cls(**fields)` from
    keywords, never both; an unknown keyword is a UsageError listing the allowed ones, and every field is
    checked against its annotated type (`check_types`) before the call does any work."""
    import dataclasses

    if options is not None and fields:
        raise UsageError(f"{function}(): pass options={cls.__name__}(...) or keyword options, not both "
                         f"(got {sorted(fields)})")
    if options is not None and not isinstance(options, cls):
        raise UsageError(f"{function}(): options={_shown(options)} is not allowed: give a {cls.__name__} or None")
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise UsageError(f"{function}(): unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    options = options or cls(**fields)
    check_types(function, {name: getattr(options, name) for name in allowed}, typing.get_type_hints(cls))
    return options
