from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., dict[str, Any]])

def bind(
    build_environ: _F,
    request_cls: type,
    conn_cls: type,
    key_cache: dict[str, str | None],
    environ_key: Callable[[str], str | None],
    host_cache: dict[str, tuple[str, str]],
    server_name_port: Callable[[str, str], tuple[str, str]],
    split_target: Callable[[str], tuple[str, str, str | None]],
    apply_proxy_headers: Callable[[dict[str, Any], Any], None],
    /,
) -> _F: ...
