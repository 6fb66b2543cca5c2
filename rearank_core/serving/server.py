"""Listening and serving: the socket is bound before the model loads, so a taken port or a bad host fails at
once (and port 0 picks a free one), then uvicorn serves the app on it."""

from __future__ import annotations

import socket
from contextlib import suppress

import uvicorn
from fastapi import FastAPI

from rearank_core.errors import InputError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; connections made before uvicorn starts wait in its backlog."""
    if not 0 <= port <= 65535:
        raise InputError(f"must be between 0 and 65535, got {port}", field="port")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {host!r}: {exc.strerror}", field="host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}", field="port") from None
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: FastAPI, sock: socket.socket, log_level: str = "info") -> None:
    """Serve until SIGINT / SIGTERM; in-flight requests finish before the app shuts down. Returns after Ctrl-C
    (uvicorn re-raises the SIGINT it has already handled gracefully: not an error)."""
    with suppress(KeyboardInterrupt):
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
