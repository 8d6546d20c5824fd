"""preforkd's own HTTP/2 server core (RFC 9113), sans IO; HPACK (RFC 7541) by ``hpack``.

``H2Connection`` (also named ``ServerConnection``) is the connection the worker's adapter
drives; see ``connection`` for the theory of operation and the module map.
"""

from __future__ import annotations

from preforkd.proto.h2.connection import UPGRADE_RESPONSE, H2Connection
from preforkd.proto.h2.settings import ErrorCodes, H2ProtocolError, H2Settings

ServerConnection = H2Connection

__all__ = [
    "UPGRADE_RESPONSE",
    "ErrorCodes",
    "H2Connection",
    "H2ProtocolError",
    "H2Settings",
    "ServerConnection",
]
