"""What the three loopback test servers share: an aiohttp application on 127.0.0.1 and its lifecycle.

A subclass adds its routes in ``routes(app)``. Then, in a test's event loop::

    async with FakeGemini() as fake:          # or: await fake.start() ... await fake.stop()
        client = make_client(fake.url)

or in a daemon thread with its own loop (for code under test that blocks the test's loop)::

    stub.start_in_thread(); ...; stub.stop_thread()

or as its own process (``python -m tests.fakes.<module> --port N``, through ``serve_until_interrupted``).
``wait_for`` (async) and ``wait_until`` (blocking) poll a condition and, on timeout, raise TimeoutError
with the server's own ``describe()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Self

from aiohttp import web


class LoopbackServer:
    """An aiohttp server on ``host`` (127.0.0.1) and ``port`` (0: any free port, known after start)."""

    client_max_size = 64 * 1024 * 1024  # request bodies up to 64 MiB (uploads, trace batches)

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    def routes(self, app: web.Application) -> None:
        """Add the server's routes to ``app``."""
        raise NotImplementedError

    def describe(self) -> str:
        """What the server saw recently, for the message of a wait that timed out."""
        return ""

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:40123``."""
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Start serving in the running loop; return ``url``."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self.url

    async def stop(self) -> None:
        """Stop serving (open requests get ``shutdown_timeout`` to finish)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a daemon thread with its own event loop; return ``url``."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} thread already running")
        ready = threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failures.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"{type(self).__name__} thread did not start")
        if failures:
            self._thread = None
            raise failures[0]
        return self.url

    def stop_thread(self, timeout: float = 5.0) -> None:
        """Stop the server started by ``start_in_thread`` and join its thread."""
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._thread_loop = None

    # ------------------------------------------------------------------ waiting

    def _timeout(self, timeout: float, what: str) -> TimeoutError:
        label = f" ({what})" if what else ""
        seen = self.describe()
        return TimeoutError(
            f"{type(self).__name__}: condition{label} not met within {timeout}s" + (f"\n{seen}" if seen else "")
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0, *, what: str = "") -> None:
        """Poll ``predicate`` from the running loop until true; TimeoutError with ``describe()`` otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise self._timeout(timeout, what)
            await asyncio.sleep(0.01)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, *, what: str = "") -> None:
        """Block until ``predicate`` is true (for a server in its own thread); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise self._timeout(timeout, what)
            time.sleep(0.01)


def serve_until_interrupted(server: LoopbackServer, banner: Callable[[LoopbackServer], str]) -> None:
    """Run ``server`` in this process until interrupted (SIGTERM ends it at once); print ``banner(server)``.

    The banner's first word after " on " is the URL (tests and benchmarks read it from the first line).
    """

    async def serve() -> None:
        await server.start()
        print(banner(server), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
