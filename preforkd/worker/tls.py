"""TLS contexts and per-listener protocol choice.

Contexts are built from the configuration by the same function in the master (at start-up,
so a bad certificate is a configuration error before any worker starts) and in each worker
(after fork, so no OpenSSL state is shared between processes).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from preforkd.config import Config

ALPN_H2 = "h2"
ALPN_HTTP11 = "http/1.1"

_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """How one listener serves: its socket, protocols and TLS context (None: plain)."""

    sock: socket.socket
    protocols: frozenset[str]  # {"h1"}, {"h2"} or both
    ssl_context: ssl.SSLContext | None


def build_ssl_context(cfg: Config, protocols: frozenset[str]) -> ssl.SSLContext:
    """A server context for ``protocols``; raises OSError/ssl.SSLError on bad files."""
    assert cfg.certfile is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[cfg.tls_min_version]
    # RFC 9113 §9.2.1: no TLS compression and no renegotiation under HTTP/2.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(cfg.certfile, cfg.keyfile, cfg.keyfile_password)
    ctx.verify_mode = _CERT_REQS[cfg.cert_reqs]
    if cfg.ca_certs:
        ctx.load_verify_locations(cfg.ca_certs)
    if cfg.ciphers:
        ctx.set_ciphers(cfg.ciphers)
    alpn = []
    if "h2" in protocols:
        alpn.append(ALPN_H2)
    if "h1" in protocols:
        alpn.append(ALPN_HTTP11)
    ctx.set_alpn_protocols(alpn)
    return ctx


def listener_protocols(cfg: Config, sock: socket.socket) -> frozenset[str]:
    """The protocols a listener serves: --bind-protocols for its address, else the default."""
    protocols = set(cfg.http_protocols)
    for entry in cfg.bind_protocols:
        address, _, names = entry.rpartition("=")
        if _same_address(address, sock):
            protocols = set(names.split("+"))
    if not cfg.http2:
        protocols.discard("h2")
    return frozenset(protocols or {"h1"})


def _same_address(address: str, sock: socket.socket) -> bool:
    bound = sock.getsockname()
    if address.startswith("unix:"):
        return sock.family == socket.AF_UNIX and bound == address[5:]
    if address.startswith("fd://"):
        return sock.fileno() == int(address[5:])
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) != bound[1]:
        return False
    try:
        wanted = {info[4][0] for info in socket.getaddrinfo(host, None, sock.family)}
    except OSError:
        return False
    return bound[0] in wanted


def listener_specs(cfg: Config, socks: tuple[socket.socket, ...]) -> list[ListenerSpec]:
    """Protocols and TLS context of every listener (contexts shared per protocol set)."""
    contexts: dict[frozenset[str], ssl.SSLContext] = {}
    specs = []
    for sock in socks:
        protocols = listener_protocols(cfg, sock)
        ctx = None
        if cfg.certfile:
            ctx = contexts.get(protocols)
            if ctx is None:
                ctx = contexts[protocols] = build_ssl_context(cfg, protocols)
        specs.append(ListenerSpec(sock, protocols, ctx))
    return specs


def check_tls_settings(cfg: Config) -> list[str]:
    """Problems with the TLS settings, as messages naming the setting (empty: fine)."""
    problems = []
    if not cfg.certfile:
        for name in ("keyfile", "ca_certs", "ciphers"):
            if getattr(cfg, name):
                problems.append(f"{name} is set but TLS is off: set --certfile too")
        if cfg.cert_reqs != "none":
            problems.append("cert_reqs needs TLS: set --certfile too")
        return problems
    if cfg.cert_reqs != "none" and not cfg.ca_certs:
        problems.append(f"--cert-reqs {cfg.cert_reqs} needs --ca-certs to verify clients")
    try:
        build_ssl_context(cfg, frozenset(cfg.http_protocols))
    except (OSError, ssl.SSLError, ValueError) as exc:
        problems.append(f"--certfile/--keyfile: cannot load the certificate: {exc}")
    return problems
