"""Serving the POS API with uvicorn: in the foreground for `agent run`, or in a thread for
the demo and tests. Binding anywhere but loopback needs an API key."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
import time
from typing import Any

import uvicorn

from ..agent.config import ConfigError
from ..agent.runtime import Runtime
from .api import create_app


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) into host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ConfigError(f"listen: {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str) -> None:
    """Refuse to serve anywhere but loopback without an API key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"listen on {host}: set [api] api_key in tillstamp.toml first "
                          "(only 127.0.0.1 may be served without a key)")


def app_for(rt: Runtime, host: str) -> Any:
    """The app for a bind address; refuses a non-loopback bind without an API key."""
    key = rt.till.config.api_key
    check_bind(host, key)
    return create_app(rt, api_key=key, require_key=not is_loopback(host), bind_host=host)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it Nagle + delayed ACK add 40 ms to every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"listen {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """uvicorn that also ends the event streams when asked to exit, so shutdown is prompt."""

    def __init__(self, config: uvicorn.Config, rt: Runtime) -> None:
        super().__init__(config)
        self.rt = rt

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.rt.hub.close()
        # Not super(): uvicorn would re-raise the signal after serving, killing the process
        # before the runtime's shutdown (readers, print queue, database) could run.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _config(app: Any) -> uvicorn.Config:
    # log_config=None: the agent's own logging setup (console + rotating file) applies.
    return uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                          timeout_graceful_shutdown=3)


def serve(rt: Runtime, listen: str, on_ready: Any = None) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn handles the signals in the main thread)."""
    host, port = parse_listen(listen)
    app = app_for(rt, host)
    sock = bind(host, port)
    if on_ready is not None:
        on_ready(sock.getsockname()[1])
    _Server(_config(app), rt).run(sockets=[sock])


class BackgroundServer:
    """The API served from a thread on loopback (demo, tests, benchmarks)."""

    def __init__(self, rt: Runtime, host: str = "127.0.0.1", port: int = 0) -> None:
        self.rt = rt
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = _Server(_config(app_for(rt, host)), rt)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="pos-api", daemon=True)

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving; returns once uvicorn has started."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        tick = threading.Event()  # never set: an interruptible 10 ms pause
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the POS API did not start")
            tick.wait(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (the runtime is shut down separately)."""
        self.rt.hub.close()
        self.server.should_exit = True
        self._thread.join(10)
