"""Moved to ``preforkd.proto.h2.settings``; kept for existing imports."""

from preforkd.proto.h2.settings import Budget, ErrorCodes, H2ProtocolError, H2Settings

__all__ = ["Budget", "ErrorCodes", "H2ProtocolError", "H2Settings"]
