"""Finding the WSGI application named by an app spec.

Accepted specs::

    module                      'application', else 'app', in module
    module:attr                 an attribute of the module
    module:attr.sub             a dotted attribute path
    module:factory()            the result of calling a factory
    module:factory(1, debug=True, name='x')   with literal arguments only

Factory arguments are parsed with :mod:`ast` and evaluated with ``ast.literal_eval``:
a spec is configuration, never code, so nothing in it is ever ``eval``-ed.

Every failure raises :class:`~preforkd.errors.AppLoadError` with a one-line message; when
the failure came from running the application's own code (importing it, calling its
factory), ``details`` holds the traceback so the log shows where it broke.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from preforkd.errors import AppLoadError

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

DEFAULT_NAMES = ("application", "app")
SPEC_FORMS = "'module:attr', 'module:attr.sub', 'module:factory(args)' or 'module'"


@dataclass(frozen=True, slots=True)
class AppSpec:
    """A parsed app spec: where to look, and whether to call what is found there."""

    module: str
    attrs: tuple[str, ...]  # empty: look for DEFAULT_NAMES
    call: bool = False
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


def _malformed(spec: str, why: str) -> AppLoadError:
    return AppLoadError(f"app spec {spec!r} is malformed: {why} (expected {SPEC_FORMS})")


def _dotted(node: ast.expr) -> tuple[str, ...] | None:
    """('a', 'b', 'c') for the expression a.b.c, None for anything else."""
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else (*head, node.attr)
    return None


def parse_spec(spec: str) -> AppSpec:
    """Parse ``module[:expr]`` without importing anything."""
    module, colon, expr = spec.strip().partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise _malformed(spec, f"{module!r} is not a module name")
    if not colon:
        return AppSpec(module, ())
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise _malformed(spec, f"cannot parse {expr!r}") from None
    call = isinstance(node, ast.Call)
    target = node.func if isinstance(node, ast.Call) else node
    attrs = _dotted(target)
    if attrs is None:
        raise _malformed(spec, f"{expr!r} is not an attribute name or a factory call")
    if not isinstance(node, ast.Call):
        return AppSpec(module, attrs)
    try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = []
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ValueError("**kwargs")
            kwargs.append((keyword.arg, ast.literal_eval(keyword.value)))
    except ValueError:
        raise _malformed(
            spec, "factory arguments must be literals (numbers, strings, ...)"
        ) from None
    return AppSpec(module, attrs, call, args, tuple(kwargs))


def _prepare_path(chdir: str | None, pythonpath: Sequence[str]) -> None:
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise AppLoadError(f"cannot change directory to {chdir!r}: {exc.strerror}") from None
    # Result: [*pythonpath, cwd, rest of sys.path], each entry once.
    front = [os.path.abspath(entry) for entry in pythonpath] + [os.getcwd()]
    rest = [entry for entry in sys.path if entry not in front and entry != ""]
    sys.path[:] = list(dict.fromkeys(front)) + rest


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _import(module: str) -> Any:
    importlib.invalidate_caches()  # files created since the last import must be found
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # The spec's own module (or a package above it) does not exist: a path problem,
        # not a bug in the application, so no traceback.
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise AppLoadError(
                f"module {module!r} not found (searched the current directory "
                f"{os.getcwd()!r} and sys.path; see --chdir and --pythonpath)"
            ) from None
        raise AppLoadError(
            f"failed to import {module!r}: {_describe(exc)}", traceback.format_exc()
        ) from None
    except (Exception, SystemExit) as exc:
        raise AppLoadError(
            f"failed to import {module!r}: {_describe(exc)}", traceback.format_exc()
        ) from None


def _resolve(obj: Any, spec: AppSpec, text: str) -> Any:
    where = f"module {spec.module!r}"
    for attr in spec.attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f"{where} has no attribute {attr!r}") from None
        except Exception as exc:
            raise AppLoadError(
                f"{text!r}: reading {attr!r} failed: {_describe(exc)}", traceback.format_exc()
            ) from None
        where = repr(attr)
    return obj


def _takes_environ_and_start_response(app: Any) -> bool:
    # The callable's own signature, not that of what it wraps: a decorator such as
    # werkzeug's Request.application turns f(request) into a WSGI app(*args) and sets
    # __wrapped__ to f, which inspect would otherwise follow.
    try:
        signature = inspect.signature(app, follow_wrapped=False)
    except (TypeError, ValueError):  # builtins, C extensions: give them the benefit
        return True
    try:
        signature.bind({}, lambda *a: None)
    except TypeError:
        return False
    return True


def load_app(spec: str, *, chdir: str | None = None, pythonpath: Sequence[str] = ()) -> WSGIApp:
    """Import and return the WSGI application named by ``spec``.

    ``chdir`` happens first; then the pythonpath entries and the current directory are put
    at the front of ``sys.path``. Raises AppLoadError.
    """
    parsed = parse_spec(spec)
    _prepare_path(chdir, pythonpath)
    module = _import(parsed.module)
    if parsed.attrs:
        app = _resolve(module, parsed, spec)
    else:
        found = [name for name in DEFAULT_NAMES if hasattr(module, name)]
        if not found:
            raise AppLoadError(
                f"module {parsed.module!r} has no attribute 'application' or 'app'; "
                f"name the application, e.g. '{parsed.module}:myapp'"
            )
        app = getattr(module, found[0])
    if parsed.call:
        if not callable(app):
            raise AppLoadError(f"factory in {spec!r} is not callable ({type(app).__name__})")
        try:
            app = app(*parsed.args, **dict(parsed.kwargs))
        except Exception as exc:
            raise AppLoadError(
                f"calling the factory {spec!r} failed: {_describe(exc)}", traceback.format_exc()
            ) from None
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable (it is {type(app).__name__})")
    if not _takes_environ_and_start_response(app):
        hint = "" if parsed.call else f"; if it is a factory, call it: '{spec}()'"
        raise AppLoadError(
            f"{spec!r} is not a WSGI application: it does not accept "
            f"(environ, start_response){hint}"
        )
    return cast(WSGIApp, app)
