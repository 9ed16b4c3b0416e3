"""A network link of limited bandwidth, emulated by a TCP proxy (benchmarks only).

The benchmarks run client and servers on one machine, where loopback moves gigabytes per
second and the CPU is the only limit. A reading centre fetches studies over a WAN or a
hospital LAN instead. :class:`ThrottledLink` forwards a local port to a server and paces
what the server sends (all connections share the link, as they would share an uplink), so
a benchmark can measure both servers through the same emulated link. No root, no ``tc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

__all__ = ["ThrottledLink"]

_CHUNK = 64 * 1024


class _Pacer:
    """Shared pacing of the downstream direction: ``rate`` bytes per second in total."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0

    async def take(self, n: int) -> None:
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)


class ThrottledLink:
    """``127.0.0.1:port`` forwards to ``127.0.0.1:target``; the answers travel at
    ``mbit_per_s`` megabits per second, shared by every connection.

    Use as a context manager; the proxy runs its own event loop on a thread.
    """

    def __init__(self, target: int, mbit_per_s: float) -> None:
        self.target = target
        self.rate = mbit_per_s * 1e6 / 8
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pacer = _Pacer(self.rate)

    def __enter__(self) -> ThrottledLink:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return
        up = asyncio.create_task(self._pump(client_r, server_w, None))
        down = asyncio.create_task(self._pump(server_r, client_w, self._pacer))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for writer in (client_w, server_w):
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pacer: _Pacer | None
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(_CHUNK):
                if pacer is not None:
                    await pacer.take(len(chunk))
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
