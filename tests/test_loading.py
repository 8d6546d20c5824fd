"""Loading the WSGI application from an app spec, with throwaway modules in tmp_path."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from preforkd.errors import AppLoadError
from preforkd.loading import load_app, parse_spec

WSGI = """
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"app"]

def application(environ, start_response):
    start_response("200 OK", [])
    return [b"application"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory as cwd; sys.path, cwd and new sys.modules entries are restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def make(root: Path, relpath: str, source: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def body(app: Any) -> bytes:
    return b"".join(app({}, lambda status, headers: None))


def load_error(spec: str, **kw: Any) -> AppLoadError:
    with pytest.raises(AppLoadError) as info:
        load_app(spec, **kw)
    assert "\n" not in str(info.value)  # one-line messages
    return info.value


# --- Forms of the spec -----------------------------------------------------------------


def test_module_attr(project: Path) -> None:
    make(project, "hello.py", WSGI)
    assert body(load_app("hello:app")) == b"app"
    assert body(load_app("hello:application")) == b"application"


def test_module_alone_prefers_application_then_app(project: Path) -> None:
    make(project, "both.py", WSGI)
    make(project, "only_app.py", "from both import app\n")
    assert body(load_app("both")) == b"application"
    assert body(load_app("only_app")) == b"app"


def test_dotted_module_and_attribute_path(project: Path) -> None:
    make(project, "pkg/__init__.py", "")
    make(
        project,
        "pkg/web.py",
        """
        class Holder:
            class Inner:
                @staticmethod
                def wsgi(environ, start_response):
                    return [b"deep"]
        """,
    )
    assert body(load_app("pkg.web:Holder.Inner.wsgi")) == b"deep"


def test_factory_with_literal_arguments(project: Path) -> None:
    make(
        project,
        "factory.py",
        """
        def create_app(*args, **kwargs):
            def app(environ, start_response):
                return [repr((args, kwargs)).encode()]
            return app

        class Api:
            make = staticmethod(create_app)
        """,
    )
    assert body(load_app("factory:create_app()")) == b"((), {})"
    got = body(load_app("factory:create_app(1, 'a:b', debug=True, tags=['x'], n=None)"))
    assert got == repr(((1, "a:b"), {"debug": True, "tags": ["x"], "n": None})).encode()
    assert body(load_app("factory:Api.make(2)")) == b"((2,), {})"


def test_callable_object_is_accepted(project: Path) -> None:
    make(
        project,
        "obj.py",
        """
        class App:
            def __call__(self, environ, start_response):
                return [b"obj"]
        app = App()
        """,
    )
    assert body(load_app("obj:app")) == b"obj"


@pytest.mark.parametrize(
    "spec",
    [
        "a:b:c",
        "",
        "1mod:app",
        "mod-x:app",
        "mod:",
        "mod:app[0]",
        "mod:f()()",
        "mod:f(x)",
        "mod:f(*args)",
        "mod:f(**{'a': 1})",
        "mod:f(__import__('os').system('echo pwned'))",
        "mod:1 + 1",
    ],
)
def test_malformed_specs_never_evaluate_anything(spec: str) -> None:
    with pytest.raises(AppLoadError, match=r"^app spec .* is malformed: "):
        parse_spec(spec)


def test_parse_spec() -> None:
    parsed = parse_spec("pkg.mod:make.app(1, k='v')")
    assert (parsed.module, parsed.attrs, parsed.call) == ("pkg.mod", ("make", "app"), True)
    assert (parsed.args, parsed.kwargs) == ((1,), (("k", "v"),))


# --- Paths -----------------------------------------------------------------------------


def test_chdir_happens_first(project: Path) -> None:
    make(project, "site/inside.py", WSGI)
    assert body(load_app("inside:app", chdir="site")) == b"app"
    assert os.getcwd() == str(project / "site")
    assert sys.path[0] == str(project / "site")


def test_pythonpath_entries_go_first_in_order(project: Path) -> None:
    make(project, "one/shared.py", "def app(e, s): return [b'one']\n")
    make(project, "two/shared.py", "def app(e, s): return [b'two']\n")
    assert body(load_app("shared:app", pythonpath=["two", "one"])) == b"two"
    assert sys.path[:3] == [str(project / "two"), str(project / "one"), str(project)]


def test_bad_chdir(project: Path) -> None:
    err = load_error("x:app", chdir="nowhere")
    assert str(err) == "cannot change directory to 'nowhere': No such file or directory"


# --- Failures --------------------------------------------------------------------------


def test_top_module_not_found(project: Path) -> None:
    err = load_error("nosuchmodule:app")
    assert str(err).startswith("module 'nosuchmodule' not found")
    assert err.details == ""
    make(project, "pkg2/__init__.py", "")
    assert str(load_error("pkg2.missing:app")).startswith("module 'pkg2.missing' not found")


def test_import_error_inside_the_app_is_not_module_not_found(project: Path) -> None:
    make(project, "broken.py", "import not_installed_dependency\napp = None\n")
    err = load_error("broken:app")
    assert str(err) == (
        "failed to import 'broken': ModuleNotFoundError: No module named 'not_installed_dependency'"
    )
    assert "Traceback" in err.details and "broken.py" in err.details
    make(project, "badname.py", "from os import no_such_name\n")
    assert "ImportError: cannot import name 'no_such_name'" in str(load_error("badname"))


def test_syntax_error_names_file_and_line(project: Path) -> None:
    path = make(project, "syntax.py", "x = 1\ndef broken(:\n")
    err = load_error("syntax:app")
    assert str(err).startswith("failed to import 'syntax': SyntaxError: ")
    assert f"({path}, line 2)" in str(err)
    assert "SyntaxError" in err.details


def test_exception_and_sys_exit_at_import(project: Path) -> None:
    make(project, "boom.py", "raise RuntimeError('no database')\n")
    err = load_error("boom:app")
    assert str(err) == "failed to import 'boom': RuntimeError: no database"
    assert "RuntimeError" in err.details
    make(project, "quits.py", "import sys\nsys.exit(3)\n")
    assert str(load_error("quits:app")) == "failed to import 'quits': SystemExit: 3"


def test_missing_attributes(project: Path) -> None:
    make(project, "hello.py", WSGI + "class Box:\n    pass\n")
    assert str(load_error("hello:nope")) == "module 'hello' has no attribute 'nope'"
    assert str(load_error("hello:Box.inner")) == "'Box' has no attribute 'inner'"
    make(project, "empty.py", "")
    assert str(load_error("empty")).startswith(
        "module 'empty' has no attribute 'application' or 'app'"
    )


def test_not_callable(project: Path) -> None:
    make(project, "values.py", "app = 42\ndef make():\n    return None\n")
    assert str(load_error("values:app")) == "'values:app' is not callable (it is int)"
    assert str(load_error("values:make()")) == "'values:make()' is not callable (it is NoneType)"
    assert str(load_error("values:app()")).startswith("factory in 'values:app()' is not callable")


def test_factory_failure_has_traceback(project: Path) -> None:
    make(project, "fails.py", "def create():\n    raise KeyError('SECRET_KEY')\n")
    err = load_error("fails:create()")
    assert str(err) == "calling the factory 'fails:create()' failed: KeyError: 'SECRET_KEY'"
    assert "KeyError" in err.details and "fails.py" in err.details
    err = load_error("fails:create(1, 2)")
    assert "TypeError" in str(err)


def test_factory_named_without_call_is_explained(project: Path) -> None:
    make(project, "flaskish.py", "def create_app():\n    return lambda e, s: [b'']\n")
    err = load_error("flaskish:create_app")
    assert "does not accept (environ, start_response)" in str(err)
    assert "'flaskish:create_app()'" in str(err)
    assert body(load_app("flaskish:create_app()")) == b""
