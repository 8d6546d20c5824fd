"""Listening sockets: parse the bind addresses, bind or inherit them, close them.

The master binds every listener before it forks; workers inherit the open sockets
through fork (no file-descriptor passing, no re-binding). Addresses (``cfg.binds``):

``HOST:PORT``
    An IPv4 address or a host name (bound to the first address it resolves to).
    ``:PORT`` means every IPv4 interface. Port 0 lets the kernel choose; the log
    shows the real port.
``[IPV6]:PORT``
    An IPv6 address, with IPV6_V6ONLY set so that ``[::]:80`` and ``0.0.0.0:80`` can
    be bound side by side.
``unix:PATH``
    A Unix-domain socket. A socket file left behind by a dead server is removed first
    (only if it is a socket and nothing accepts connections on it); a live one is an
    error. The file is created with the mode ``0o777 & ~umask`` (set ``--umask`` to
    let other users connect) and removed when the master exits.
``fd://N``
    A socket that is already bound and listening, inherited from a supervisor;
    its family and type are read from the descriptor.

systemd socket activation: when ``LISTEN_PID`` is our pid and ``LISTEN_FDS`` is N > 0,
the N sockets at descriptors 3, 4, ... are used *instead of* ``cfg.binds``, and the
``LISTEN_*`` variables are removed from the environment (as ``sd_listen_fds(1)`` does),
so that no child process mistakes them for its own.

TCP listeners get SO_REUSEADDR. All listeners are non-blocking and, like every socket
Python creates, not inheritable across exec (fork needs no such flag).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass

from preforkd.errors import BindError

log = logging.getLogger("preforkd.master")

SD_LISTEN_FDS_START = 3  # systemd passes activated sockets from this descriptor on
_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class TcpAddress:
    text: str  # as configured, for messages
    host: str
    port: int
    ipv6: bool


@dataclass(frozen=True)
class UnixAddress:
    text: str
    path: str


@dataclass(frozen=True)
class FdAddress:
    text: str
    fd: int


Address = TcpAddress | UnixAddress | FdAddress


@dataclass(eq=False)
class Listener:
    """One listening socket, and the socket file to remove when it is closed."""

    sock: socket.socket
    name: str  # the real bound address, e.g. "127.0.0.1:41234" or "unix:/run/app.sock"
    unlink_path: str | None = None  # absolute path of a unix socket file we created
    unlink_id: tuple[int, int] | None = None  # its (st_dev, st_ino) when we created it

    def close(self) -> None:
        self.sock.close()
        if self.unlink_path is None:
            return
        try:  # remove the file only if it is still the one we created
            st = os.lstat(self.unlink_path)
            if (st.st_dev, st.st_ino) == self.unlink_id:
                os.unlink(self.unlink_path)
        except OSError:
            pass


def parse_bind(text: str) -> Address:
    """Parse one bind address (see the module docstring); raises BindError."""
    value = text.strip()
    if value.startswith("unix:"):
        if not value[5:]:
            raise BindError(f"{value!r}: unix: needs a path, e.g. unix:/run/preforkd.sock")
        return UnixAddress(value, value[5:])
    if value.startswith("fd://"):
        if not value[5:].isdigit():
            raise BindError(f"{value!r}: fd:// needs a descriptor number, e.g. fd://3")
        return FdAddress(value, int(value[5:]))
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise BindError(f"{value!r} is not HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
    ipv6 = host.startswith("[") and host.endswith("]")
    if ipv6:
        host = host[1:-1]
    elif ":" in host or "[" in host or "]" in host:
        raise BindError(f"{value!r}: an IPv6 address goes in brackets, e.g. [::1]:8000")
    return TcpAddress(value, host, int(port), ipv6)


def open_listeners(
    binds: Iterable[str],
    backlog: int,
    environ: MutableMapping[str, str] | None = None,
) -> list[Listener]:
    """Bind (or inherit) every listener; all or nothing: raises BindError."""
    env = os.environ if environ is None else environ
    fds = systemd_listen_fds(env, os.getpid())
    if fds:
        log.info("socket activation: using %d socket(s) passed by systemd", len(fds))
        addresses: list[Address] = [FdAddress(f"systemd fd {fd}", fd) for fd in fds]
    else:
        addresses = [parse_bind(text) for text in binds]  # every syntax error first
    listeners: list[Listener] = []
    try:
        for address in addresses:
            listeners.append(open_listener(address, backlog))
    except BaseException:
        close_listeners(listeners)
        raise
    return listeners


def close_listeners(listeners: Iterable[Listener]) -> None:
    for listener in listeners:
        listener.close()


def open_listener(address: Address, backlog: int) -> Listener:
    if isinstance(address, TcpAddress):
        return bind_tcp(address, backlog)
    if isinstance(address, UnixAddress):
        return bind_unix(address, backlog)
    return inherit_fd(address)


def systemd_listen_fds(environ: MutableMapping[str, str], pid: int) -> list[int]:
    """The descriptors systemd passed to this process (and forget the variables)."""
    if environ.get("LISTEN_PID") != str(pid):
        return []
    count = environ.get("LISTEN_FDS", "")
    for name in _SYSTEMD_VARIABLES:
        environ.pop(name, None)
    if not count.isdigit():
        raise BindError(f"LISTEN_FDS={count!r} is not a number of sockets")
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


def bind_tcp(address: TcpAddress, backlog: int) -> Listener:
    family = socket.AF_INET6 if address.ipv6 else socket.AF_UNSPEC
    host = address.host or ("::" if address.ipv6 else "0.0.0.0")
    try:
        infos = socket.getaddrinfo(
            host, address.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"{address.text}: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(f"{address.text}: {_reason(exc)}") from None
    return Listener(sock, format_address(sock))


def bind_unix(address: UnixAddress, backlog: int) -> Listener:
    remove_stale_socket(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address.path)
        st = os.lstat(address.path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(f"{address.text}: {_reason(exc)}") from None
    # An absolute path, so that a later chdir (--preload --chdir) cannot misdirect unlink.
    path = os.path.abspath(address.path)
    return Listener(sock, address.text, path, (st.st_dev, st.st_ino))


def remove_stale_socket(address: UnixAddress) -> None:
    """Remove a socket file nobody accepts on; refuse anything else at that path."""
    try:
        st = os.lstat(address.path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(f"{address.text}: {_reason(exc)}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"{address.text}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live server with a full backlog answers EAGAIN
    try:
        probe.connect(address.path)
    except ConnectionRefusedError:
        pass  # stale: the server that created it is gone
    except BlockingIOError:
        raise BindError(f"{address.text}: address already in use (busy server)") from None
    except OSError as exc:
        raise BindError(f"{address.text}: {_reason(exc)}") from None
    else:
        raise BindError(f"{address.text}: address already in use by a running server")
    finally:
        probe.close()
    try:
        os.unlink(address.path)
    except OSError as exc:
        raise BindError(f"{address.text}: cannot remove stale socket: {_reason(exc)}") from None
    log.info("removed stale socket file %s", address.path)


def inherit_fd(address: FdAddress) -> Listener:
    """Adopt a listening socket that a supervisor bound for us."""
    try:
        sock = socket.socket(fileno=address.fd)
    except OSError as exc:
        raise BindError(f"{address.text}: {_reason(exc)}") from None
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = "not a stream (TCP or unix) socket"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "not a listening socket"
    if problem:
        sock.detach()  # leave the descriptor as we found it
        raise BindError(f"{address.text}: {problem}")
    sock.setblocking(False)
    sock.set_inheritable(False)
    return Listener(sock, f"{format_address(sock)} ({address.text})")


def format_address(sock: socket.socket) -> str:
    """The bound address of a socket as it would be written in a bind."""
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    if isinstance(name, bytes):  # Linux abstract namespace
        name = name.decode(errors="replace")
    return f"unix:{name}"


def listener_names(listeners: Sequence[Listener]) -> str:
    return " ".join(listener.name for listener in listeners)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
