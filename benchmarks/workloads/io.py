"""I/O-bound tasks on threads: sleeps, and requests to an HTTP server on loopback."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import tasks
from ..core import ChildContext, Job
from .base import MapWorkload, Prepared, single

SERVER_LIFETIME_S = 300.0
"""The test server shuts itself down after this long even if nobody stops it."""


def _sleep(ctx: ChildContext) -> Prepared:
    items = list(range(int(ctx.params["n"])))
    job = Job(tasks.wait, items, {"delay": float(ctx.params["ms"]) / 1000})
    return single(job, items)


SLEEP = MapWorkload(
    name="sleep",
    title="Waits on threads",
    description=(
        "256 calls to `time.sleep(0.02)` on 32 threads. The ideal is 256 / 32 * 20 ms = 0.16 s."
    ),
    modes=("thread",),
    variants={"256x20ms": {"n": 256, "ms": 20, "workers": 32}},
    quick={"32x5ms": {"n": 32, "ms": 5, "workers": 8}},
    serial="it would take 256 * 20 ms = 5.1 s; the ideal 0.16 s is the reference",
    prepare=_sleep,
)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _handler(delay: float) -> type[BaseHTTPRequestHandler]:
    class EchoHandler(BaseHTTPRequestHandler):
        """Answers ``GET /<n>`` with ``n`` after ``delay`` seconds, as a slow backend would."""

        def do_GET(self) -> None:
            time.sleep(delay)
            body = self.path.strip("/").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return EchoHandler


def start_server(delay: float) -> tuple[str, ThreadingHTTPServer]:
    """Starts the echo server on 127.0.0.1 (a free port) in a daemon thread."""
    server = _QuietServer(("127.0.0.1", 0), _handler(delay))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watchdog = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}", server


def _http(ctx: ChildContext) -> Prepared:
    url, server = start_server(float(ctx.params["delay_ms"]) / 1000)
    items = list(range(int(ctx.params["n"])))
    prepared = single(Job(tasks.fetch, items, {"url": url}), items)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    prepared.cleanup = stop
    return prepared


HTTP = MapWorkload(
    name="http",
    title="HTTP requests on threads",
    description=(
        "400 GET requests with `urllib` to a `http.server` on 127.0.0.1, started in the benchmark "
        "process, that answers each after 5 ms; 32 threads."
    ),
    modes=("thread",),
    variants={"400req": {"n": 400, "delay_ms": 5, "workers": 32}},
    quick={"40req": {"n": 40, "delay_ms": 1, "workers": 8}},
    prepare=_http,
)
