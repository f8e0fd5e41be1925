"""Pool records: reuse by key, one pool per concurrent call, pools that may not serve again, eviction."""

from __future__ import annotations

import pytest

from fastparallel.backends.base import PoolSpec
from fastparallel.core import pools

pytestmark = pytest.mark.unit


class FakePool:
    def __init__(self, name=""):
        self.name = name
        self.reusable = True
        self.shut = False
        self.killed = False

    def shutdown(self):
        self.shut = True

    def kill_at_exit(self):
        self.killed = True


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(pools, "_registry", pools._Registry())


def idle_count():
    return sum(len(group) for group in pools._registry.idle.values())


def test_a_pool_is_reused_for_the_same_key_only():
    with pools.checkout(PoolSpec(("a",), FakePool)) as first:
        pass
    with pools.checkout(PoolSpec(("a",), FakePool)) as again:
        assert again is first
    with pools.checkout(PoolSpec(("b",), FakePool)) as other:
        assert other is not first
    assert not first.shut


def test_concurrent_checkouts_get_their_own_pools():
    with (
        pools.checkout(PoolSpec(("a",), FakePool)) as one,
        pools.checkout(PoolSpec(("a",), FakePool)) as two,
    ):
        assert one is not two
    assert idle_count() == 2


def test_pools_without_a_key_or_not_reusable_are_shut_down_after_their_call():
    with pools.checkout(PoolSpec(None, FakePool)) as private:
        pass
    assert private.shut
    with pools.checkout(PoolSpec(("a",), FakePool)) as broken:
        broken.reusable = False
    assert broken.shut and idle_count() == 0


def test_shutdown_stops_idle_pools_and_pools_in_use_after_their_call():
    with pools.checkout(PoolSpec(("a",), FakePool)) as idle:
        pass
    with pools.checkout(PoolSpec(("b",), FakePool)) as busy:
        pools.shutdown()
        assert idle.shut and not busy.shut
    assert busy.shut  # from an older generation: not kept
    with pools.checkout(PoolSpec(("a",), FakePool)) as new:
        assert new is not idle


def test_the_least_recently_used_pool_is_evicted_past_the_limit():
    made = []
    for i in range(pools.MAX_IDLE_POOLS + 2):
        with pools.checkout(PoolSpec(("k", i), lambda i=i: FakePool(str(i)))) as pool:
            made.append(pool)
    assert idle_count() == pools.MAX_IDLE_POOLS
    assert [p.shut for p in made] == [True, True] + [False] * pools.MAX_IDLE_POOLS


def test_checkin_happens_when_the_call_fails():
    with pytest.raises(ValueError), pools.checkout(PoolSpec(("a",), FakePool)):
        raise ValueError("boom")
    assert idle_count() == 1 and not pools._registry.in_use


def test_pools_in_use_are_killed_at_exit(monkeypatch):
    monkeypatch.setattr(pools, "_exiting", False)
    # Not what lies below: stopping the template at exit would stop it for good, and later
    # tests in this session need worker processes.
    monkeypatch.setattr(pools, "_stop_below", lambda at_exit: None)
    with pools.checkout(PoolSpec(("a",), FakePool)) as busy:
        pools._at_exit()
        assert busy.killed
    assert busy.shut  # not kept once the interpreter exits


def test_a_warm_process_pool_serves_any_memory_budget_and_inner_threads():
    # Both are applied per call (the pool's memory governor, the workers' context), so
    # they must not split the warm pools: a loop of calls with them keeps its workers.
    from fastparallel.backends.processes.pool import pool_spec
    from fastparallel.options import Options

    plain = pool_spec(Options(n_workers=2))
    limited = pool_spec(Options(n_workers=2, max_memory="1GB", inner_threads=3))
    assert plain.key == limited.key
