"""Real loopback HTTP for tests: uvicorn in a thread on 127.0.0.1 port 0, and a fault proxy."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Faults:
    """Probabilities of each fault per connection; `seed` makes a run repeatable."""

    seed: int
    latency: float = 0.0  # seconds added before the answer
    reset: float = 0.0  # RST before answering
    hang: float = 0.0  # never answer
    cut: float = 0.0  # close after a few bytes of the answer
    slice: float = 0.0  # answer in tiny pieces


class FaultProxy:
    """An asyncio TCP proxy on 127.0.0.1 that misbehaves per connection, by seed."""

    def __init__(self, target_port: int, faults: Faults):
        self.target_port = target_port
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.log: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FaultProxy:  # noqa: PYI034 - not subclassed
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def _pick(self) -> str:
        f = self.faults
        r = self.rng.random()
        for name, p in (("reset", f.reset), ("hang", f.hang), ("cut", f.cut), ("slice", f.slice)):
            if r < p:
                return name
            r -= p
        return "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fault = self._pick()
        self.log.append(fault)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        up = asyncio.ensure_future(self._pump(reader, up_w))
        try:
            if self.faults.latency:
                await asyncio.sleep(self.rng.random() * self.faults.latency)
            if fault == "reset":
                await asyncio.sleep(0.01)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if fault == "hang":
                await asyncio.sleep(30)
                return
            budget = self.rng.randint(1, 200) if fault == "cut" else None
            while True:
                data = await up_r.read(65536)
                if not data:
                    break
                if budget is not None:
                    writer.write(data[:budget])
                    await writer.drain()
                    budget -= len(data)
                    if budget <= 0:
                        break
                    continue
                if fault == "slice":
                    for i in range(0, len(data), 7):
                        writer.write(data[i:i + 7])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away: nothing to forward
        finally:
            up.cancel()
            up_w.close()
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        try:
            while data := await reader.read(65536):
                if first:  # one request per connection, so every request meets its own fault
                    data = data.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
                    first = False
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
