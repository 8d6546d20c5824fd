"""Everything generated from the settings registry in :mod:`preforkd.config`.

From the ``Setting`` declared on each field of :class:`~preforkd.config.Config` this module
derives the command-line parser, the ``PREFORKD_*`` environment loader, the TOML config-file
loader, the README settings reference and the example config file.

Precedence: defaults < config file < environment < command line. Every layer is read and
checked completely before anything is reported, so one :class:`ConfigError` lists every
mistake at once, each naming the setting and where the value came from.

Naming rules:

- TOML key: the field name (``workers``, ``binds``), plus ``Setting.toml_aliases``
  (``bind`` for ``binds``).
- Environment variable: ``Setting.env`` if declared (``PREFORKD_BIND``), else
  ``PREFORKD_`` + the field name upper-cased (``PREFORKD_WORKERS``,
  ``PREFORKD_ACCESS_LOG_FORMAT``). Variables starting with ``PREFORKD_INTERNAL_`` are
  reserved for preforkd's own process plumbing and never read as settings; any other
  unknown ``PREFORKD_*`` variable is an error.
- CLI: the flags declared in ``Setting.flags``; booleans get ``--no-<flag>`` too.

Run ``python -m preforkd.settings_docs`` to print the settings reference,
``--update-readme`` to rewrite it in README.md, ``--example-toml`` to print the example
config file (conf/preforkd.toml).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from preforkd import __version__, native
from preforkd import parsers as p
from preforkd.config import Config, Setting
from preforkd.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "PREFORKD_"
INTERNAL_ENV_PREFIX = "PREFORKD_INTERNAL_"
# Read at import time, before any setting is (so not a setting): see preforkd/native.
_NOT_SETTINGS = frozenset({native.PURE_PYTHON_ENV})
README_START = "<!-- settings:start -->"
README_END = "<!-- settings:end -->"

EPILOG = """\
Every option can also be set in a TOML config file (-c FILE) or with a PREFORKD_*
environment variable. Precedence: defaults < config file < environment < command
line. See the settings reference in README.md for every setting and its variable.

signals (to the master process):
  TERM         graceful stop: finish in-flight requests, then exit
  INT, QUIT    quick stop
  HUP          reload: re-read the configuration, replace the workers gracefully
  TTIN, TTOU   one worker more / one worker less
  USR1         reopen the log files (after logrotate)
  USR2         upgrade: start a new master that inherits the listening sockets

subcommands (the first argument; an app module of the same name: MODULE:CALLABLE):
  preforkd status [--json]   the master and each worker of the running server(s)
  preforkd top               the same, live; keys: h reload, + / - workers, q quit
  preforkd check URL         a health probe for container and Kubernetes checks"""


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting with every derived spelling: what the generators work from."""

    name: str
    setting: Setting
    default: Any
    kind: type  # bool, int, float or str; the element type for multiple settings
    optional: bool  # None is a valid value (an empty string means None)
    env: str
    toml_keys: tuple[str, ...]  # empty for cli_only settings

    @property
    def label(self) -> str:
        """How the command line spells the setting in messages: its long flag."""
        if self.setting.positional:
            return self.setting.metavar or self.name.upper()
        longs = [f for f in self.setting.flags if f.startswith("--")]
        return (longs or list(self.setting.flags))[0]


def _kind(hint: Any) -> tuple[type, bool]:
    """(scalar type, optional) of a Config field annotation."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0])[0], len(rest) < len(args)
    if origin is tuple:
        return args[0], False
    if isinstance(hint, type):
        return hint, False
    raise TypeError(f"unsupported setting type {hint!r}")


def _build_specs() -> tuple[Spec, ...]:
    hints = typing.get_type_hints(Config)
    specs = []
    for field in dataclasses.fields(Config):
        setting: Setting = field.metadata["setting"]
        kind, optional = _kind(hints[field.name])
        keys = () if setting.cli_only else (field.name, *setting.toml_aliases)
        specs.append(
            Spec(
                name=field.name,
                setting=setting,
                default=field.default,
                kind=kind,
                optional=optional,
                env=setting.env or ENV_PREFIX + field.name.upper(),
                toml_keys=keys,
            )
        )
    return tuple(specs)


SPECS: tuple[Spec, ...] = _build_specs()
_BY_NAME = {spec.name: spec for spec in SPECS}
_BY_ENV = {spec.env: spec for spec in SPECS}
_BY_TOML = {key: spec for spec in SPECS for key in spec.toml_keys}


class EarlyExit(Exception):
    """--help or --version was given: print ``text`` to standard output and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# --- Converting one value --------------------------------------------------------------


def _check(spec: Spec, value: Any) -> Any:
    """Apply choices and the validator to a converted value; returns it."""
    choices = spec.setting.choices
    if choices and value not in choices:
        raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
    if spec.setting.validate is not None and value is not None:
        spec.setting.validate(value)
    return value


def _parse_items(spec: Spec, items: Sequence[str]) -> tuple[Any, ...]:
    values, problems = [], []
    for item in items:
        try:
            values.append(spec.setting.parse(item))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(values)


def _from_text(spec: Spec, text: str) -> Any:
    """Convert one textual value (a CLI argument, an environment variable)."""
    if spec.setting.boolean:
        return p.boolean(text)
    if spec.setting.multiple:
        return _check(spec, _parse_items(spec, _split(text)))
    if spec.optional and not text.strip():
        return None
    return _check(spec, spec.setting.parse(text))


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_TOML_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _toml_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return _TOML_TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


def _from_toml(spec: Spec, value: Any) -> Any:
    """Convert one config-file value, checking its TOML type."""
    if isinstance(value, str):
        return _from_text(spec, value)
    if spec.setting.multiple:
        if not isinstance(value, list):
            raise ValueError(f"expected an array of strings or a string, got {_toml_type(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {index + 1}: expected a string, got {_toml_type(item)}")
        return _check(spec, _parse_items(spec, value))
    if isinstance(value, list | dict):
        raise ValueError(f"expected a single value, not {_toml_type(value)}")
    if spec.setting.boolean:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_toml_type(value)}")
    if isinstance(value, bool):
        raise ValueError(f"expected {_TOML_TYPE_NAMES[spec.kind]}, got a boolean")
    if spec.kind is float and isinstance(value, int | float):
        return _check(spec, float(value))
    if spec.kind is int and isinstance(value, int):
        return _check(spec, value)
    if spec.kind is str and isinstance(value, int):  # e.g. user = 1000
        return _check(spec, str(value))
    raise ValueError(f"expected {_TOML_TYPE_NAMES[spec.kind]}, got {_toml_type(value)}")


def _hint(word: str, candidates: Sequence[str], quote: bool = True) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not match:
        return ""
    return f" (did you mean {match[0]!r}?)" if quote else f" (did you mean {match[0]}?)"


# --- The layers ------------------------------------------------------------------------

Values = dict[str, Any]


def _read_file(path: str, errors: list[str]) -> Values:
    where = f"config file {path}"
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        errors.append(f"{where}: cannot read: {exc.strerror or exc}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"{where}: invalid TOML: {exc}")
        return {}
    except UnicodeDecodeError as exc:
        errors.append(f"{where}: invalid TOML: not UTF-8 ({exc.reason})")
        return {}
    values: Values = {}
    seen: dict[str, str] = {}
    for key, raw in data.items():
        spec = _BY_TOML.get(key)
        if spec is None:
            if key in _BY_NAME:  # a cli_only setting
                errors.append(f"{where}: {key}: cannot be set in a config file")
            else:
                errors.append(f"{where}: unknown setting {key!r}{_hint(key, list(_BY_TOML))}")
            continue
        if spec.name in seen:
            errors.append(f"{where}: {seen[spec.name]} and {key} are the same setting")
            continue
        seen[spec.name] = key
        try:
            values[spec.name] = _from_toml(spec, raw)
        except ValueError as exc:
            errors.append(f"{where}: {key}: {exc}")
    return values


def _read_env(environ: Mapping[str, str], errors: list[str]) -> Values:
    values: Values = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var.startswith(INTERNAL_ENV_PREFIX):
            continue
        if var in _NOT_SETTINGS:
            continue
        spec = _BY_ENV.get(var)
        if spec is None:
            hint = _hint(var, list(_BY_ENV), quote=False)
            errors.append(f"unknown environment variable {var}{hint}")
            continue
        try:
            values[spec.name] = _from_text(spec, environ[var])
        except ValueError as exc:
            errors.append(f"{var}: {exc}")
    return values


class _ArgparseError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse for syntax only: errors are collected, never printed and exited on."""

    def error(self, message: str) -> NoReturn:
        raise _ArgparseError(message.removeprefix("argument "))


class _EarlyExitAction(argparse.Action):
    """--help and --version: stop parsing at once, like argparse's own actions do."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        self.render: Callable[[argparse.ArgumentParser], str] = kw.pop("render")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        raise EarlyExit(self.render(parser))


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser. Every value is kept as the text given (or a list of them)."""
    parser = _Parser(
        prog="preforkd",
        usage="%(prog)s [OPTIONS] APP",
        description="A prefork HTTP/1.1 and HTTP/2 server for Python WSGI applications.",
        epilog=_escape(EPILOG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        allow_abbrev=False,
    )
    general = parser.add_argument_group("General")
    general.add_argument(
        "-h",
        "--help",
        action=_EarlyExitAction,
        render=lambda parser: parser.format_help(),
        help="Show this help and exit.",
    )
    general.add_argument(
        "--version",
        action=_EarlyExitAction,
        render=lambda parser: f"preforkd {__version__}",
        help="Print the version and exit.",
    )
    groups: dict[str, Any] = {}
    for spec in SPECS:
        s = spec.setting
        if spec.setting.group not in groups:
            groups[s.group] = parser.add_argument_group(s.group)
        group = groups[s.group]
        help_text = _escape(f"{s.help} [{_cli_default(spec)}; env {spec.env}]")
        if s.positional:
            group.add_argument(
                spec.name, nargs="?", default=argparse.SUPPRESS, metavar=s.metavar, help=help_text
            )
            continue
        kw: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS, "help": help_text}
        if s.boolean:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["action"] = "append" if s.multiple else "store"
            kw["metavar"] = _metavar(spec)
        group.add_argument(*s.flags, **kw)
    return parser


def _metavar(spec: Spec) -> str | None:
    if spec.setting.choices:
        return "{" + ",".join(spec.setting.choices) + "}"
    if spec.setting.metavar is None and spec.kind is int:
        return "N"
    return spec.setting.metavar


def _cli_default(spec: Spec) -> str:
    if spec.setting.positional:
        return "required"
    if spec.default is None or spec.default == ():
        return "default: none"
    if isinstance(spec.default, tuple):
        # ", " so that help wraps between items, never inside one (".gi t,__pycache__").
        return "default: " + ", ".join(str(item) for item in spec.default)
    return f"default: {show_value(spec, spec.default)}"


def _read_cli(argv: Sequence[str], errors: list[str]) -> Values | None:
    """The settings given on the command line, or None if its syntax is broken."""
    parser = build_parser()
    try:
        namespace, extras = parser.parse_known_args(list(argv))
    except _ArgparseError as exc:
        errors.append(str(exc))
        return None
    unknown = [arg for arg in extras if arg.startswith("-") and arg != "-"]
    flags = [opt for action in parser._actions for opt in action.option_strings]
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        errors.append(f"unrecognized option {flag}{_hint(flag, flags, quote=False)}")
    if not unknown:  # otherwise the extras are most likely the unknown options' values
        errors.extend(f"unexpected argument {arg!r}" for arg in extras)
    values: Values = {}
    for name, given in vars(namespace).items():
        spec = _BY_NAME[name]
        try:
            if isinstance(given, bool):  # --flag/--no-flag
                values[name] = given
            elif isinstance(given, list):  # repeated flag; each may be comma-separated
                items = [item for text in given for item in _split(text)]
                values[name] = _check(spec, _parse_items(spec, items))
            else:
                values[name] = _from_text(spec, given)
        except ValueError as exc:
            errors.append(f"{spec.label}: {exc}")
    return values


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build the Config from defaults < config file < environment < command line.

    ``argv`` excludes the program name (default: ``sys.argv[1:]``); ``environ`` defaults
    to ``os.environ``. Raises :class:`ConfigError` listing every problem, one per line,
    or :class:`EarlyExit` for --help and --version.
    """
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    errors: list[str] = []
    cli = _read_cli(argv, errors)
    env = _read_env(environ, errors)
    path = (cli or {}).get("config") or env.get("config")
    file_values = _read_file(path, errors) if path else {}
    merged: Values = {**file_values, **env, **(cli or {})}
    if path:  # absolute, so that a reload after --chdir reads the same file
        merged["config"] = os.path.abspath(path)
    if cli is not None and not merged.get("app"):
        errors.append(
            "no application given: pass APP (e.g. preforkd myproject.wsgi:application), "
            "or set app in the config file or PREFORKD_APP"
        )
    if errors:
        raise ConfigError("\n".join(errors))
    return Config(**merged)


_Sub = TypeVar("_Sub", bound="DataclassInstance")


def subconfig(cfg: Config, cls: type[_Sub]) -> _Sub:
    """Build a small frozen dataclass ``cls`` from the Config fields of the same names.

    Lower layers declare only what they use, e.g. ``@dataclass(frozen=True) class
    Limits: limit_request_line: int; ...`` and get ``subconfig(cfg, Limits)``.
    """
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def show_value(spec: Spec, value: Any) -> str:
    """A value as a user would write it on the command line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if spec.setting.parse is p.octal:
        return f"{value:03o}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)
