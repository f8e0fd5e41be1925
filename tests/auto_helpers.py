"""Workloads for the tests of ``threadpool="auto"`` and ``advise()``.

They live at module level so that worker processes import them by name. Each returns
where it ran (``os.getpid()``, ``threading.get_ident()``), so that a test can tell which
mode was chosen by where the work actually happened, not by what was logged.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({})
)  # loopback: never through a proxy


def burn(loops: int) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def loops_for(seconds: float) -> int:
    """The ``burn`` loop count that takes about ``seconds`` here (best of three)."""
    loops = 50_000
    best = min(_timed_burn(loops) for _ in range(3))
    return max(1, int(loops * seconds / best))


def _timed_burn(loops: int) -> float:
    began = time.perf_counter()
    burn(loops)
    return time.perf_counter() - began


def cpu_where(x: int, loops: int) -> tuple[int, int, int]:
    burn(loops)
    return x, os.getpid(), threading.get_ident()


def cpu_divide(x: int, loops: int) -> float:
    """Pure-Python work, then ``1 / x``: item 0 raises ``ZeroDivisionError``."""
    burn(loops)
    return 1 / x


def sleep_where(x: int, seconds: float) -> tuple[int, int, int]:
    time.sleep(seconds)
    return x, os.getpid(), threading.get_ident()


def fetch_where(x: int, url: str) -> tuple[str, int, int]:
    with _OPENER.open(f"{url}/{x}", timeout=30) as response:
        body = response.read().decode()
    return body, os.getpid(), threading.get_ident()


def sort_where(array: Any) -> tuple[Any, int, int]:
    """NumPy's sort runs in C with the GIL released; the sorted array comes back."""
    import numpy as np

    return np.sort(array), os.getpid(), threading.get_ident()


def tiny_where(x: int) -> Any:
    """Next to nothing; every 1000th item says where it ran."""
    return x & 1 if x % 1000 else (os.getpid(), threading.get_ident())


def tiny(x: int) -> int:
    return x & 1


def counted(x: int, directory: str, loops: int = 0) -> tuple[int, int]:
    """Appends ``x`` and this pid to ``<directory>/calls`` (one short append per call:
    lines never interleave), burns ``loops``; returns ``(x * x, pid)``."""
    with open(Path(directory) / "calls", "a") as f:
        f.write(f"{x} {os.getpid()}\n")
    burn(loops)
    return x * x, os.getpid()


def calls(directory: str | Path) -> list[tuple[int, int]]:
    lines = (Path(directory) / "calls").read_text().split()
    return [(int(lines[i]), int(lines[i + 1])) for i in range(0, len(lines), 2)]


def waits_for_file(x: int, directory: str, target: int) -> int:
    """Item 0 waits until item ``target`` has run (it writes a file); the others write theirs."""
    folder = Path(directory)
    if x == 0:
        deadline = time.monotonic() + 60
        while not (folder / f"{target}.done").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    (folder / f"{x}.done").write_text("")
    return x


def fails_on(x: int, bad: tuple[int, ...], seconds: float = 0.01) -> int:
    time.sleep(seconds)
    if x in bad:
        raise ValueError(f"bad item {x}")
    return x


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _handler(delay: float) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)  # a slow backend
            body = self.path.rsplit("/", 1)[1].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def local_server(delay: float, lifetime: float = 60.0) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers ``GET /<x>`` with ``x`` after ``delay``
    seconds; its URL. It stops when the block ends, or after ``lifetime`` seconds anyway."""
    server = _Server(("127.0.0.1", 0), _handler(delay))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watchdog = threading.Timer(lifetime, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()


def note_start(directory: str) -> None:
    """An initializer: appends this pid and thread to ``<directory>/inits``."""
    with open(Path(directory) / "inits", "a") as f:
        f.write(f"{os.getpid()} {threading.get_ident()}\n")


def inits(directory: str | Path) -> list[tuple[int, int]]:
    path = Path(directory) / "inits"
    lines = path.read_text().split() if path.exists() else []
    return [(int(lines[i]), int(lines[i + 1])) for i in range(0, len(lines), 2)]


def first_waits(x: int, release: threading.Event, bad: int = -1) -> int:
    """Item 0 waits for ``release`` (a thread of this process: the probe's); item ``bad`` raises."""
    if x == 0:
        release.wait(60)
    time.sleep(0.01)
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x
