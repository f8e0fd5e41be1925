"""The dispatcher against a fake backend: submission, ordering, windows, crashes, errors, deadlines.

No threads or processes: the fake backend runs a chunk when it is polled, and can be told
to crash, requeue or split chunks, so each rule of the loop is checked on its own.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from fastparallel.backends.base import Crashed, Done, Requeue, Split, Started
from fastparallel.core.chunking import Chunk, ChunkReader, ChunkSizer
from fastparallel.core.dispatch import Dispatcher
from fastparallel.errors import ParallelTimeoutError
from fastparallel.options import Options

pytestmark = pytest.mark.unit


class FakeBackend:
    """Runs ``fn`` over a chunk when polled; ``script`` maps a chunk's start to a special outcome."""

    chunks_per_worker = 2
    reports_starts = False
    runs_on_poll = False

    def __init__(self, fn=lambda x: x * 10, script=None, reverse=False, stall=False):
        self.fn = fn
        self.script = dict(script or {})  # start -> "crash" | "requeue" | "split" (once each)
        self.reverse = reverse  # finish the newest chunk first
        self.stall = stall  # never finish anything
        self.queued: list[Chunk] = []
        self.submitted: list[Chunk] = []
        self.max_queued = 0
        self.aborted = False

    def begin(self, call, n_workers, options):
        pass

    def submit(self, chunk):
        self.queued.append(chunk)
        self.submitted.append(chunk)
        self.max_queued = max(self.max_queued, len(self.queued))

    def poll(self, timeout):
        if self.stall:
            time.sleep(timeout or 0)
            return []
        chunk = self.queued.pop(-1 if self.reverse else 0)
        action = self.script.pop(chunk.start, None)
        if action == "crash":
            return [
                Crashed(
                    chunk, 1 if len(chunk.items) > 1 else 0, RuntimeError(f"crash at {chunk.start}")
                )
            ]
        if action == "requeue":
            return [Requeue(chunk)]
        if action == "split":
            return [Split(chunk)]
        values, errors = [], []
        for offset, item in enumerate(chunk.items):
            try:
                values.append(self.fn(item))
            except Exception as exc:
                values.append(None)
                errors.append((offset, exc))
        return [Done(chunk, values, errors, 0.0)]

    def abort(self):
        self.aborted = True

    def end(self):
        pass


def dispatcher(
    backend, items, *, chunksize=2, n_workers=2, ordered=True, window=None, deadline=None, **opts
):
    options = Options(n_workers=n_workers, chunksize=chunksize, **opts)
    sizer = ChunkSizer(chunksize, None, n_workers)
    reader = ChunkReader(iter(items), sizer)
    return Dispatcher(
        backend,
        reader,
        sizer,
        options,
        n_workers=n_workers,
        head=[],
        window=window,
        ordered=ordered,
        deadline=deadline,
    )


def values(pieces) -> list[Any]:
    return [v for _, vs in sorted(pieces, key=lambda p: p[0]) for v in vs]


def test_every_item_once_in_order():
    backend = FakeBackend(reverse=True)
    pieces = list(dispatcher(backend, range(11)).run())
    assert [start for start, _ in pieces] == sorted(start for start, _ in pieces)  # ordered
    assert values(pieces) == [x * 10 for x in range(11)]
    assert backend.max_queued <= 2 * FakeBackend.chunks_per_worker


def test_unordered_yields_as_chunks_finish():
    pieces = list(dispatcher(FakeBackend(reverse=True), range(8), ordered=False).run())
    assert [start for start, _ in pieces] != sorted(start for start, _ in pieces)
    assert values(pieces) == [x * 10 for x in range(8)]


def test_window_bounds_how_far_reading_runs_ahead():
    read = []

    def items():
        for i in itertools.count():
            read.append(i)
            yield i

    stream = dispatcher(FakeBackend(reverse=True), items(), chunksize=1, window=5).run()
    first = [next(stream) for _ in range(3)]
    assert [start for start, _ in first] == [0, 1, 2]
    assert len(read) <= 3 + 5 + 1  # the pieces out, the window, one read that hit it


def test_fail_fast_raises_the_earliest_error_of_a_chunk_and_aborts():
    def fn(x):
        if x in (3, 2):
            raise KeyError(x)
        return x

    backend = FakeBackend(fn)
    with pytest.raises(KeyError) as info:
        list(dispatcher(backend, range(8), chunksize=4).run())
    assert info.value.args == (2,)
    assert backend.aborted  # chunks were still in flight


def test_return_exceptions_puts_errors_in_their_slots():
    def fn(x):
        if x == 3:
            raise KeyError(x)
        return x

    out = values(dispatcher(FakeBackend(fn), range(6), return_exceptions=True).run())
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5] and isinstance(out[3], KeyError)


def test_a_crashed_chunk_reruns_its_other_items_one_by_one():
    backend = FakeBackend(script={2: "crash"})
    out = values(dispatcher(backend, range(6), return_exceptions=True).run())
    assert isinstance(out[3], RuntimeError)  # the culprit, offset 1 of the chunk at 2
    assert out[:3] + out[4:] == [0, 10, 20, 40, 50]
    reruns = [c for c in backend.submitted if c.start == 2 and len(c.items) == 1]
    assert len(reruns) == 1  # item 2 again, alone; item 3 not again


def test_a_crash_raises_when_errors_are_not_returned():
    with pytest.raises(RuntimeError, match="crash at 2"):
        list(dispatcher(FakeBackend(script={2: "crash"}), range(6)).run())


def test_requeued_and_split_chunks_run_again():
    backend = FakeBackend(script={0: "requeue", 4: "split"})
    assert values(dispatcher(backend, range(6)).run()) == [x * 10 for x in range(6)]
    starts = [(c.start, len(c.items)) for c in backend.submitted]
    assert starts.count((0, 2)) == 2  # requeued whole
    assert (4, 1) in starts and (5, 1) in starts  # split into singles


def test_deadline_raises_a_timeout_error_naming_progress():
    backend = FakeBackend(stall=True)
    began = time.monotonic()
    with pytest.raises(ParallelTimeoutError, match="0 of 4 items finished"):
        list(dispatcher(backend, range(4), deadline=time.monotonic() + 0.05, timeout=0.05).run())
    assert time.monotonic() - began < 2
    assert backend.aborted


def test_pause_keeps_one_chunk_per_worker_and_spaces_submissions():
    backend = FakeBackend()
    d = dispatcher(backend, range(4), chunksize=1, n_workers=2, pause=0.02)
    began = time.monotonic()
    assert values(d.run()) == [0, 10, 20, 30]
    assert time.monotonic() - began >= 0.06  # three gaps of 20 ms between four starts
    assert backend.max_queued <= 2


class LateStarts(FakeBackend):
    """Reports Started: each chunk starts ``delay`` seconds after it is polled for (a cold
    worker), and is done ``busy`` seconds after that."""

    reports_starts = True

    def __init__(self, delay=0.0, busy=0.0):
        super().__init__()
        self.delay, self.busy = delay, busy
        self.submit_times: list[float] = []
        self.start_times: list[float] = []
        self.running: list[tuple[Chunk, float]] = []  # started, done at
        self.polls = 0

    def submit(self, chunk):
        super().submit(chunk)
        self.submit_times.append(time.monotonic())

    def poll(self, timeout):
        self.polls += 1
        if self.queued:  # start the next chunk
            time.sleep(self.delay)
            chunk = self.queued.pop(0)
            self.start_times.append(time.monotonic())
            self.running.append((chunk, time.monotonic() + self.busy))
            return [Started(chunk, self.start_times[-1])]
        chunk, done_at = self.running[0]
        wait = done_at - time.monotonic()
        if wait > 0 and (timeout is None or timeout >= wait):
            time.sleep(wait)
        elif wait > 0:
            time.sleep(timeout)
            return []
        self.running.pop(0)
        return [Done(chunk, [x * 10 for x in chunk.items], [], 0.0)]


def test_pause_releases_an_item_only_once_the_previous_one_started():
    backend = LateStarts(delay=0.05)
    d = dispatcher(backend, range(4), chunksize=1, n_workers=4, pause=0.02)
    assert values(d.run()) == [0, 10, 20, 30]
    for started, next_submitted in zip(
        backend.start_times[:-1], backend.submit_times[1:], strict=True
    ):
        assert next_submitted >= started + 0.02  # not merely 0.02 s after the previous submission


def test_pause_does_not_spin_while_every_worker_is_busy():
    backend = LateStarts(busy=0.1)
    d = dispatcher(backend, range(3), chunksize=1, n_workers=1, pause=0.01)
    assert values(d.run()) == [0, 10, 20]
    assert backend.polls < 30  # one wait per outcome, not a poll(0) loop until the worker is free


def test_input_errors_name_how_far_reading_got():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    with pytest.raises(OSError) as info:
        list(dispatcher(FakeBackend(), items(), chunksize=1).run())
    assert "after 2 items were read" in " ".join(info.value.__notes__)


# -- retries and item_timeout -----------------------------------------------------------


def failing_first(times: dict[int, int], error: type[Exception] = ValueError):
    """fn for FakeBackend: item x raises on its first ``times[x]`` attempts."""
    seen: dict[int, int] = {}

    def fn(x):
        seen[x] = seen.get(x, 0) + 1
        if seen[x] <= times.get(x, 0):
            raise error(f"attempt {seen[x]} of {x}")
        return x * 10

    fn.seen = seen
    return fn


def test_a_retried_item_runs_alone_and_holds_back_later_pieces():
    fn = failing_first({2: 2})
    backend = FakeBackend(fn)
    pieces = list(dispatcher(backend, range(8), chunksize=4, retries=2).run())
    assert [start for start, _ in pieces] == sorted(
        start for start, _ in pieces
    )  # still in input order
    assert values(pieces) == [x * 10 for x in range(8)]
    assert fn.seen == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}
    assert [(c.start, len(c.items)) for c in backend.submitted].count(
        (2, 1)
    ) == 2  # two retries, alone


def test_waiting_retries_count_in_the_window():
    read = []

    def items():
        for i in itertools.count():
            read.append(i)
            yield i

    fn = failing_first({0: 1})
    stream = dispatcher(
        FakeBackend(fn), items(), chunksize=1, window=4, retries=1, retry_delay=0.2
    ).run()
    first = next(stream)  # item 0, after its retry
    assert first == (0, [0])
    assert len(read) == 4  # item 0, waiting, counts in the window: 3 items read after it


def test_a_final_error_ends_the_call_while_retries_wait():
    fn = failing_first({1: 5, 5: 1}, error=KeyError)
    backend = FakeBackend(fn)
    began = time.monotonic()
    with pytest.raises(KeyError) as info:
        list(
            dispatcher(
                backend, range(8), chunksize=1, retries=3, retry_on=ValueError, retry_delay=30
            ).run()
        )
    assert time.monotonic() - began < 5  # no waiting for anything
    assert "attempts were made" not in " ".join(getattr(info.value, "__notes__", []))
    assert backend.aborted


def test_retries_wait_without_holding_the_backend():
    fn = failing_first({0: 1})
    backend = FakeBackend(fn)
    d = dispatcher(backend, range(6), chunksize=1, n_workers=1, retries=1, retry_delay=0.1)
    assert values(d.run()) == [x * 10 for x in range(6)]
    order = [c.start for c in backend.submitted]
    assert order.index(0, 1) > order.index(5)  # every other item went first, while item 0 waited


class Overdue(FakeBackend):
    """Chunks run forever unless polled after their deadline: then expire() fails the first
    item of each with an ItemTimeoutError (a Crashed outcome, as a killed worker gives)."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.started: dict[int, float] = {}
        self.poll_timeouts: list[float | None] = []

    def submit(self, chunk):
        super().submit(chunk)
        self.started[chunk.id] = time.monotonic()

    def poll(self, timeout):
        self.poll_timeouts.append(timeout)
        time.sleep(timeout or 0)
        return []

    def item_deadline(self):
        return min(self.started[c.id] for c in self.queued) + self.limit if self.queued else None

    def expire(self, now):
        from fastparallel.errors import item_timeout_error

        out = []
        for chunk in list(self.queued):
            if now >= self.started[chunk.id] + self.limit:
                self.queued.remove(chunk)
                out.append(
                    Crashed(
                        chunk,
                        0,
                        item_timeout_error(chunk.start, chunk.items[0], self.limit, "test"),
                    )
                )
        return out


def test_the_wait_step_wakes_for_the_earliest_item_deadline():
    from fastparallel.errors import ItemTimeoutError

    backend = Overdue(limit=0.05)
    out = values(
        dispatcher(backend, range(2), chunksize=1, item_timeout=0.05, return_exceptions=True).run()
    )
    assert all(isinstance(v, ItemTimeoutError) for v in out), out
    assert backend.poll_timeouts and all(t is not None and t <= 0.05 for t in backend.poll_timeouts)


class ShiftedClock:
    """The dispatcher's clock: real time plus ``shift``, which a test moves on to stand for
    time that passed (a consumer's) without waiting for it."""

    def __init__(self) -> None:
        self.shift = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.shift

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


@pytest.fixture
def shifted(monkeypatch) -> ShiftedClock:
    from fastparallel.core import dispatch

    clock = ShiftedClock()
    monkeypatch.setattr(dispatch, "time", clock)
    return clock


@pytest.mark.timeout(30)
def test_the_time_a_consumer_keeps_a_piece_does_not_count_against_the_timeout(shifted):
    run = dispatcher(FakeBackend(), range(12), deadline=shifted.monotonic() + 5, timeout=5.0).run()
    got = []
    for _, vs in run:
        got.extend(vs)
        shifted.shift += 60  # the consumer spends a minute on each piece
    assert got == [x * 10 for x in range(12)]


@pytest.mark.timeout(30)
def test_what_finished_by_the_deadline_is_delivered_then_nothing_more_starts():
    backend = FakeBackend()
    run = dispatcher(backend, range(20), deadline=time.monotonic() - 1, timeout=1.0).run()
    got = []
    with pytest.raises(ParallelTimeoutError, match="8 items finished"):
        for _, vs in run:
            got.extend(vs)
    # The four chunks in flight (two per worker) had finished: none is dropped.
    assert got == [x * 10 for x in range(8)]
    assert len(backend.submitted) == 4


class DeepBackend(FakeBackend):
    """A backend that may hold up to 8 short chunks per worker; its items take
    ``item_seconds`` each, as a worker would report."""

    short_chunks_per_worker = 8

    def __init__(self, item_seconds: float):
        super().__init__()
        self.item_seconds = item_seconds

    def poll(self, timeout):
        return [
            o._replace(seconds=self.item_seconds * len(o.chunk.items))
            for o in super().poll(timeout)
        ]


@pytest.mark.parametrize(
    ("item_seconds", "most_queued"),
    [
        (1e-7, 2 * 8),  # chunks of 0.2 us: up to 8 per worker
        (1e-3, 2 * 2),  # chunks of 2 ms: about QUEUED_SECONDS (5 ms) is 2 per worker
        (0.1, 2 * 2),  # long chunks: chunks_per_worker, never fewer
    ],
)
def test_short_chunks_queue_deeper_on_a_backend_that_takes_them(item_seconds, most_queued):
    backend = DeepBackend(item_seconds)
    pieces = list(dispatcher(backend, range(200), chunksize=2).run())
    assert values(pieces) == [x * 10 for x in range(200)]
    assert backend.max_queued == most_queued


def test_the_first_chunks_queue_as_usual_before_anything_is_measured():
    backend = DeepBackend(1e-7)
    run = dispatcher(backend, range(200), chunksize=2).run()
    next(run)  # the first piece: the backend was polled once
    assert len(backend.submitted) == 2 * FakeBackend.chunks_per_worker
