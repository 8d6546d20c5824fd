"""--reload's watcher: what it watches, how it reports, how the master drives it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from preforkd.config import Config
from preforkd.master.arbiter import Context
from preforkd.master.reload import Origin
from preforkd.master.watcher import (
    PathFilter,
    WatcherReport,
    app_package_dir,
    describe_paths,
    parse_report,
    watch_roots,
    watcher_program,
)
from tests.master.conftest import Master

DEFAULTS = Config()


def test_filter_includes_and_excludes_relative_to_the_watched_root(tmp_path):
    root = tmp_path / "venv" / "project"  # "venv" above the root does not exclude anything
    config = tmp_path / "etc" / "preforkd.toml"
    accept = PathFilter([root], DEFAULTS.reload_include, DEFAULTS.reload_exclude, [config])
    assert accept(None, str(root / "app.py"))
    assert accept(None, str(root / "pkg" / "views.py"))
    assert accept(None, str(config))  # the config file, whatever its name
    assert not accept(None, str(root / "README.md"))
    assert not accept(None, str(root / "pkg" / "__pycache__" / "views.py"))
    assert not accept(None, str(root / ".venv" / "lib" / "x.py"))
    assert not accept(None, str(root / "venv" / "lib" / "x.py"))
    assert not accept(None, str(root / ".git" / "hooks" / "x.py"))
    assert not accept(None, str(root / "pkg" / ".views.py.swp"))
    assert not accept(None, str(root / "pkg" / "views.py~"))
    assert not accept(None, str(root / ".#views.py"))
    assert not accept(None, str(tmp_path / "elsewhere.py"))  # outside every root
    assert not accept(None, str(tmp_path / "etc" / "other.py"))  # the config's dir only


def test_filter_with_custom_patterns(tmp_path):
    accept = PathFilter([tmp_path], ("*.py", "*.html"), ("static",))
    assert accept(None, str(tmp_path / "templates" / "index.html"))
    assert not accept(None, str(tmp_path / "static" / "page.html"))


def test_roots_are_deduplicated(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    roots = watch_roots(
        [str(tmp_path), str(tmp_path / "src")], tmp_path / "src" / "pkg", [tmp_path / "c.toml"]
    )
    assert roots == [tmp_path.resolve()]
    other = tmp_path.parent / "conf"
    roots = watch_roots([str(tmp_path)], None, [other / "c.toml"])
    assert sorted(roots) == sorted([tmp_path.resolve(), other.resolve()])


def test_app_package_dir_is_found_without_importing(tmp_path):
    package = tmp_path / "mysite"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (package / "wsgi.py").write_text("")
    (tmp_path / "single.py").write_text("raise RuntimeError('imported!')\n")
    assert app_package_dir("mysite.wsgi:application", [str(tmp_path)]) == package.resolve()
    assert app_package_dir("single:app", [str(tmp_path)]) == tmp_path.resolve()
    assert app_package_dir("nowhere_to_be_found:app", [str(tmp_path)]) is None
    assert "mysite" not in sys.modules and "single" not in sys.modules
    # The standard library or site-packages are not worth watching.
    assert app_package_dir("json:loads", sys.path) is None
    assert app_package_dir("textwrap:dedent", sys.path) is None


def test_reports():
    assert parse_report(b'watching ["/a", "/b"]') == WatcherReport("watching", ("/a", "/b"))
    assert parse_report(b'changed ["/a/x.py"]') == WatcherReport("changed", ("/a/x.py",))
    assert parse_report(b"changed nonsense") is None
    assert parse_report(b"hello") is None
    assert describe_paths(["/srv/a.py", "/srv/b/c.py", "/etc/x", "/srv/d"], "/srv") == (
        "a.py, b/c.py, /etc/x and 1 more"
    )


def test_watcher_program_arguments(tmp_path):
    cfg = Config(app="pkg.wsgi:app", chdir="site", pythonpath=("src",), config="/c.toml",
                 reload=True)  # fmt: skip
    spec = watcher_program(cfg, master_pid=7, cwd=str(tmp_path), environ={"A": "1"}, stdout=9)
    assert spec.argv[:5] == (sys.executable, "-m", "preforkd.master.watcher", "--master", "7")
    argv = " ".join(spec.argv)
    assert "--dir site --app pkg.wsgi:app --chdir=site --pythonpath=src" in argv
    assert "--include=*.py" in argv and "--exclude=__pycache__" in argv
    assert "--file /c.toml" in argv
    assert spec.stdout == 9 and spec.cwd == str(tmp_path) and spec.env == {"A": "1"}
    dirs = watcher_program(
        Config(app="a:b", reload_dirs=("x", "y")), master_pid=7, cwd="/", environ={}, stdout=1
    )
    assert "--dir x --dir y" in " ".join(dirs.argv) and "--app" not in dirs.argv


# --- the master's side, with the fake process layer ------------------------------------


@pytest.fixture
def dev_master(tmp_path):
    cfg = Config(app="myapp:app", reload=True)
    master = Master(cfg, Context(origin=Origin(("myapp:app", "--reload"), {}, str(tmp_path))))
    yield master
    master.close()


def test_master_starts_the_watcher_and_reloads_on_its_report(dev_master, caplog):
    master = dev_master
    master.boot()
    (watcher,) = master.os.programs.values()
    assert watcher.spec.argv[2] == "preforkd.master.watcher"
    watcher.write(b'watching ["/srv"]\n')
    master.step()
    assert "reload: watching /srv" in caplog.messages
    watcher.write(b'changed ["/srv/views.py", "/srv/models.py"]\nchanged ["/srv/a.py"]\n')
    master.step()
    assert master.arbiter.generation == 2  # two reports in one turn: one reload
    assert "reload: starting generation 2 (replacing 1)" in caplog.messages


def test_dead_watcher_is_restarted_with_back_off(dev_master, caplog):
    master = dev_master
    master.boot()
    (first,) = master.os.programs.values()
    master.os.exit(first.pid, 1)
    start = master.os.now
    master.step()
    assert (
        f"reload: the file watcher (pid {first.pid}) exited with code 1; restarting it in 1s"
        in (caplog.messages)
    )
    master.step()
    assert len(master.os.programs) == 2 and master.os.now == pytest.approx(start + 1.0)
    second = master.os.programs[max(master.os.programs)]
    master.os.exit(second.pid, 1)
    master.step()
    master.step()
    assert len(master.os.programs) == 3 and master.os.now == pytest.approx(start + 3.0)


def test_watcher_is_stopped_with_the_master(dev_master):
    master = dev_master
    (pid,) = master.boot()
    (watcher,) = master.os.programs.values()
    master.signal(signal.SIGTERM)
    master.step()
    assert master.os.children[watcher.pid].signals == [signal.SIGTERM]
    master.os.exit(pid, 0)
    master.os.exit(watcher.pid, -signal.SIGTERM)
    assert master.run_until_done() == 0


def test_no_watcher_without_reload(make_master):
    master = make_master(workers=1)
    master.boot()
    assert master.os.programs == {}


@pytest.mark.parametrize("path", ["app.py", "sub/views.py"])
def test_filter_accepts_nested_python_files(tmp_path: Path, path: str):
    assert PathFilter([tmp_path], ("*.py",), ())(None, str(tmp_path / path))
