"""The settings registry and everything generated from it: loaders, CLI, docs."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from preforkd import __version__
from preforkd.config import COMBINED_FORMAT, Config
from preforkd.errors import ConfigError
from preforkd.settings import (
    README_END,
    README_START,
    SPECS,
    EarlyExit,
    build_parser,
    load_config,
    subconfig,
)
from preforkd.settings_docs import (
    EXAMPLE_SET,
    example_toml,
    readme_block,
    settings_reference_markdown,
    update_readme,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "preforkd.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def errors_of(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(argv, environ or {})
    return str(info.value).splitlines()


# --- The registry ----------------------------------------------------------------------


def test_every_spelling_is_unique() -> None:
    envs = [spec.env for spec in SPECS]
    keys = [key for spec in SPECS for key in spec.toml_keys]
    flags = [flag for spec in SPECS for flag in spec.setting.flags]
    assert len(set(envs)) == len(envs)
    assert len(set(keys)) == len(keys)
    assert len(set(flags)) == len(flags)
    assert all(env.startswith("PREFORKD_") for env in envs)


def test_env_names_follow_the_documented_rule() -> None:
    envs = {spec.name: spec.env for spec in SPECS}
    assert envs["binds"] == "PREFORKD_BIND"
    assert envs["workers"] == "PREFORKD_WORKERS"
    assert envs["access_log_format"] == "PREFORKD_ACCESS_LOG_FORMAT"
    assert envs["config"] == "PREFORKD_CONFIG"
    assert envs["app"] == "PREFORKD_APP"


def test_defaults() -> None:
    assert load_config(["m:app"], {}) == Config(app="m:app")


# --- Precedence ------------------------------------------------------------------------


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        'app = "file:app"\nworkers = 2\nthreads = 3\ntimeout = 4\nbacklog = 5\n',
    )
    env = {"PREFORKD_CONFIG": conf, "PREFORKD_THREADS": "30", "PREFORKD_TIMEOUT": "40"}
    cfg = load_config(["--timeout", "400"], env)
    assert cfg.app == "file:app"
    assert cfg.workers == 2  # file
    assert cfg.backlog == 5  # file
    assert cfg.threads == 30  # environment beats file
    assert cfg.timeout == 400.0  # command line beats environment
    assert cfg.keep_alive == 5.0  # default
    assert cfg.config == conf


def test_cli_config_beats_env_config_and_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "workers = 7\n", "a.toml")
    write(tmp_path, "workers = 8\n", "b.toml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["m:app", "-c", "b.toml"], {"PREFORKD_CONFIG": "a.toml"})
    assert cfg.workers == 8
    assert cfg.config == str(tmp_path / "b.toml")


def test_cli_list_replaces_lower_layers(tmp_path: Path) -> None:
    conf = write(tmp_path, 'bind = ["127.0.0.1:1", "127.0.0.1:2"]\n')
    env = {"PREFORKD_BIND": "127.0.0.1:3"}
    assert load_config(["m:a", "-c", conf], env).binds == ("127.0.0.1:3",)
    cfg = load_config(["m:a", "-c", conf, "-b", "unix:/x", "--bind", "[::1]:4,fd://3"], env)
    assert cfg.binds == ("unix:/x", "[::1]:4", "fd://3")


def test_boolean_flag_overrides_env() -> None:
    env = {"PREFORKD_PRELOAD": "yes"}
    assert load_config(["m:a"], env).preload is True
    assert load_config(["m:a", "--no-preload"], env).preload is False
    assert load_config(["m:a", "--preload"], {}).preload is True


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("1", True), ("true", True), ("YES", True), ("on", True)],
        *[("0", False), ("False", False), ("no", False), ("off", False)],
    ],
)
def test_env_booleans(text: str, value: bool) -> None:
    assert load_config(["m:a"], {"PREFORKD_PRELOAD": text}).preload is value


def test_env_lists_are_comma_separated() -> None:
    env = {"PREFORKD_PYTHONPATH": "src, lib,,", "PREFORKD_FORWARDED_ALLOW_IPS": "10.0.0.0/8,*"}
    cfg = load_config(["m:a"], env)
    assert cfg.pythonpath == ("src", "lib")
    assert cfg.forwarded_allow_ips == ("10.0.0.0/8", "*")


def test_empty_value_unsets_an_optional_setting(tmp_path: Path) -> None:
    conf = write(tmp_path, 'pidfile = "/run/x.pid"\naccess_logfile = "-"\n')
    cfg = load_config(["m:a", "-c", conf, "--access-logfile", ""], {"PREFORKD_PIDFILE": ""})
    assert cfg.pidfile is None
    assert cfg.access_logfile is None


def test_app_from_env_or_file(tmp_path: Path) -> None:
    assert load_config([], {"PREFORKD_APP": "env:app"}).app == "env:app"
    conf = write(tmp_path, 'app = "file:app"\n')
    assert load_config(["-c", conf], {"PREFORKD_APP": "env:app"}).app == "env:app"
    assert load_config(["cli:app", "-c", conf], {}).app == "cli:app"


def test_values_are_parsed() -> None:
    cfg = load_config(
        ["m:a", "-t", "2m", "--keep-alive", "500ms", "-m", "077", "--loop", "asyncio"], {}
    )
    assert (cfg.timeout, cfg.keep_alive, cfg.umask, cfg.loop) == (120.0, 0.5, 0o77, "asyncio")


# --- TOML types ------------------------------------------------------------------------


def test_toml_native_and_textual_values(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        """
app = "m:a"
workers = "4"
timeout = 5
graceful_timeout = "1m"
keep_alive = 2.5
preload = "on"
umask = "027"
user = 1000
binds = "127.0.0.1:1, 127.0.0.1:2"
pythonpath = ["a,b"]
""",
    )
    cfg = load_config(["-c", conf], {})
    assert cfg.workers == 4
    assert (cfg.timeout, cfg.graceful_timeout, cfg.keep_alive) == (5.0, 60.0, 2.5)
    assert cfg.preload is True
    assert cfg.umask == 0o27
    assert cfg.user == "1000"
    assert cfg.binds == ("127.0.0.1:1", "127.0.0.1:2")
    assert cfg.pythonpath == ("a,b",)  # array items are never split


def test_toml_type_errors_are_all_reported(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        """
app = "m:a"
workers = "x"
threads = [1, 2]
backlog = true
max_requests = 1.5
preload = 1
binds = ["127.0.0.1:1", 2]
loop = "fast"
timeout = -1
forwarded_allow_ips = 3
[log_level]
x = 1
""",
    )
    lines = errors_of(["-c", conf])
    where = f"config file {conf}: "
    assert all(line.startswith(where) for line in lines)
    messages = {line.removeprefix(where) for line in lines}
    assert messages == {
        "workers: 'x' is not an integer",
        "threads: expected a single value, not an array",
        "backlog: expected an integer, got a boolean",
        "max_requests: expected an integer, got a number",
        "preload: expected true or false, got an integer",
        "binds: item 2: expected a string, got an integer",
        "loop: 'fast' is not one of: auto, asyncio, uvloop",
        "timeout: -1.0 is out of range (0 to 86400)",
        "forwarded_allow_ips: expected an array of strings or a string, got an integer",
        "log_level: expected a single value, not a table",
    }


def test_toml_alias_and_canonical_key_conflict(tmp_path: Path) -> None:
    conf = write(tmp_path, 'bind = "127.0.0.1:1"\nbinds = ["127.0.0.1:2"]\n')
    assert errors_of(["m:a", "-c", conf]) == [
        f"config file {conf}: bind and binds are the same setting"
    ]


def test_config_key_cannot_be_set_in_the_file(tmp_path: Path) -> None:
    conf = write(tmp_path, 'config = "other.toml"\n')
    assert errors_of(["m:a", "-c", conf]) == [
        f"config file {conf}: config: cannot be set in a config file"
    ]


def test_invalid_and_missing_files(tmp_path: Path) -> None:
    conf = write(tmp_path, "workers = = 3\n")
    [line] = errors_of(["m:a", "-c", conf])
    assert line.startswith(f"config file {conf}: invalid TOML: ") and "line 1" in line
    missing = str(tmp_path / "missing.toml")
    assert errors_of(["m:a"], {"PREFORKD_CONFIG": missing}) == [
        f"config file {missing}: cannot read: No such file or directory"
    ]


# --- Errors ----------------------------------------------------------------------------


def test_did_you_mean_for_file_env_and_cli(tmp_path: Path) -> None:
    conf = write(tmp_path, "wrokers = 2\nzzz = 1\n")
    lines = errors_of(
        ["m:a", "-c", conf, "--wrokers", "3", "--thread=2"],
        {"PREFORKD_WROKERS": "2", "PREFORKD_BINDS": "x:1"},
    )
    assert set(lines) == {
        "unrecognized option --wrokers (did you mean --workers?)",
        "unrecognized option --thread (did you mean --threads?)",
        "unknown environment variable PREFORKD_BINDS (did you mean PREFORKD_BIND?)",
        "unknown environment variable PREFORKD_WROKERS (did you mean PREFORKD_WORKERS?)",
        f"config file {conf}: unknown setting 'wrokers' (did you mean 'workers'?)",
        f"config file {conf}: unknown setting 'zzz'",
    }


def test_bad_values_name_setting_and_source(tmp_path: Path) -> None:
    conf = write(tmp_path, "workers = 0\n")
    lines = errors_of(
        ["m:a", "-c", conf, "--threads", "x", "-b", "nope", "--log-level", "loud"],
        {"PREFORKD_TIMEOUT": "soon", "PREFORKD_PRELOAD": "maybe"},
    )
    assert set(lines) == {
        "--threads: 'x' is not an integer",
        "--bind: 'nope' is not HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N",
        "--log-level: 'loud' is not one of: debug, info, warning, error, critical",
        "PREFORKD_TIMEOUT: 'soon' is not a duration (examples: 30, 30s, 500ms, 2m)",
        "PREFORKD_PRELOAD: 'maybe' is not a boolean (use true/false, yes/no, on/off or 1/0)",
        f"config file {conf}: workers: 0 is out of range (1 to 1024)",
    }


def test_empty_bind_list_is_an_error() -> None:
    assert errors_of(["m:a"], {"PREFORKD_BIND": " , "}) == [
        "PREFORKD_BIND: at least one value is required"
    ]


def test_bad_access_log_format_is_a_config_error() -> None:
    [line] = errors_of(["m:a", "--access-log-format", "%(h)s %(nope)s"])
    assert line.startswith("--access-log-format: unknown access log atom %(nope)s")
    assert load_config(["m:a", "--access-log-format", "json"], {}).access_log_format == "json"


def test_app_is_required() -> None:
    [line] = errors_of([])
    assert line.startswith("no application given")
    assert "PREFORKD_APP" in line


def test_cli_syntax_error_and_unexpected_argument() -> None:
    assert errors_of(["m:a", "-w"]) == ["-w/--workers: expected one argument"]
    assert errors_of(["m:a", "extra"]) == ["unexpected argument 'extra'"]


def test_flags_are_not_abbreviated() -> None:
    assert errors_of(["m:a", "--work", "2"]) == [
        "unrecognized option --work (did you mean --workers?)"
    ]


def test_internal_env_vars_are_ignored_and_others_too() -> None:
    env = {"PREFORKD_INTERNAL_FDS": "3,4", "PATH": "/bin", "PREFORKDX": "1"}
    assert load_config(["m:a"], env) == Config(app="m:a")


def test_subconfig() -> None:
    @dataclasses.dataclass(frozen=True)
    class Limits:
        limit_request_line: int
        limit_request_fields: int

    cfg = Config(app="m:a", limit_request_line=123)  # differs from every default
    assert subconfig(cfg, Limits) == Limits(123, 100)


# --- Help and version ------------------------------------------------------------------


def test_help_is_grouped_and_shows_defaults_and_env() -> None:
    with pytest.raises(EarlyExit) as info:
        load_config(["--help"], {})
    text = " ".join(info.value.text.split())  # whatever the terminal width
    for group in ("Application:", "Server:", "Workers:", "Timeouts:", "Logging:", "Process:"):
        assert group in text
    assert "--preload, --no-preload" in text
    assert "[default: 1; env PREFORKD_WORKERS]" in text
    assert COMBINED_FORMAT.split()[0] in text  # '%' survives argparse's formatting
    assert "README.md" in text and "USR1" in text and "TTIN" in text


def test_help_and_version_win_over_missing_app_and_errors() -> None:
    with pytest.raises(EarlyExit) as info:
        load_config(["--version"], {"PREFORKD_WROKERS": "1"})
    assert info.value.text == f"preforkd {__version__}"
    with pytest.raises(EarlyExit):
        load_config(["-h", "--bogus"], {})


def test_parser_is_generated_from_the_registry() -> None:
    parser = build_parser()
    options = {opt for action in parser._actions for opt in action.option_strings}
    for spec in SPECS:
        assert set(spec.setting.flags) <= options


# --- Generated documents ---------------------------------------------------------------


def test_readme_settings_block_is_in_sync() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(README_START) == 1 and readme.count(README_END) == 1
    between = readme.split(README_START)[1].split(README_END)[0]
    assert between == "\n" + settings_reference_markdown(), (
        "README.md is stale: run python -m preforkd.settings_docs --update-readme"
    )


def test_reference_mentions_every_setting() -> None:
    text = settings_reference_markdown()
    for spec in SPECS:
        assert f"`{spec.env}`" in text
        for flag in spec.setting.flags:
            assert f"`{flag}`" in text


def test_update_readme_creates_replaces_and_keeps_other_text(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    assert update_readme(path)
    assert readme_block() in path.read_text()
    path.write_text(f"# x\n\nintro\n\n{README_START}\nold\n{README_END}\n\nmore\n")
    assert update_readme(path)
    assert path.read_text() == f"# x\n\nintro\n\n{readme_block()}\n\nmore\n"
    assert not update_readme(path)


def test_example_toml_is_in_sync() -> None:
    shipped = (ROOT / "conf" / "preforkd.toml").read_text(encoding="utf-8")
    assert shipped == example_toml(), (
        "conf/preforkd.toml is stale: run "
        "python -m preforkd.settings_docs --example-toml > conf/preforkd.toml"
    )
    # Everything is commented out but the app, so that the file runs from a checkout.
    assert tomllib.loads(shipped) == EXAMPLE_SET


def test_example_toml_uncommented_gives_defaults_or_examples(tmp_path: Path) -> None:
    lines = [
        re.sub(r"^# ", "", line)
        for line in example_toml().splitlines()
        if re.match(r"^(# )?[a-z0-9_]+ = ", line)
    ]
    conf = write(tmp_path, "\n".join(lines) + "\n")
    cfg = load_config(["-c", conf], {})
    for spec in SPECS:
        if spec.name == "config":
            continue
        value = getattr(cfg, spec.name)
        assert value in (spec.default, spec.setting.example, EXAMPLE_SET.get(spec.name)), spec.name
    assert len(lines) == len(SPECS) - 1  # every setting but --config


def test_module_entry_point_prints_reference(capsys: pytest.CaptureFixture[str]) -> None:
    from preforkd.settings_docs import main

    assert main([]) == 0
    assert capsys.readouterr().out == settings_reference_markdown()
    assert main(["--example-toml"]) == 0
    assert capsys.readouterr().out == example_toml()
    # The documented command runs the same generator.
    out = subprocess.run([sys.executable, "-m", "preforkd.settings_docs", "--example-toml"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout  # fmt: skip
    assert out == example_toml()


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("PREFORKD_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("PREFORKD_WORKERS", "3")
    assert load_config(["m:a"]).workers == 3
