from collections.abc import Callable
from typing import TypeVar

_F = TypeVar("_F", bound=Callable[..., bytes])

def bind_head(
    head: _F,
    cls: type,
    request_cls: type,
    none: object,
    length: object,
    chunked: object,
    close: object,
    /,
) -> _F: ...
