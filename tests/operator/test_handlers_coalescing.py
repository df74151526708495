"""Child events and resyncs for one model coalesce: while a reconcile runs, any number of triggers queue at
most one more run (it reads the CR inside the lock, so it sees every change that came in meanwhile)."""

from __future__ import annotations

import asyncio

import pytest
from sglang_operator import handlers
from sglang_operator.settings import OperatorSettings

KEY = ("default", "m")


async def test_a_burst_of_triggers_queues_one_more_run_not_several(monkeypatch: pytest.MonkeyPatch) -> None:
    state = handlers.State(OperatorSettings())
    lock, first_may_finish = asyncio.Lock(), asyncio.Event()
    runs: list[int] = []
    late: list[asyncio.Task[None]] = []

    async def fake_run(state_: handlers.State, key: tuple[str, str], permanent: bool) -> None:
        async with lock:
            state_.queued.pop(key, None)
            runs.append(len(runs))
            if len(runs) == 1:
                await first_may_finish.wait()
                # A trigger landing as the first run ends: it gets to look before the queued run takes the
                # lock, and must find that run still queued (the first run's cleanup, which happens before
                # it looks, must not remove the waiter's entry).
                late.append(asyncio.create_task(handlers._run_quietly(state_, key)))

    monkeypatch.setattr(handlers, "_run", fake_run)
    first = asyncio.create_task(handlers._run_quietly(state, KEY))
    await asyncio.sleep(0)
    burst = [asyncio.create_task(handlers._run_quietly(state, KEY)) for _ in range(5)]
    await asyncio.sleep(0)
    first_may_finish.set()
    await asyncio.gather(first, *burst)
    await asyncio.gather(*late)
    assert len(runs) == 2
    assert state.queued == {}


async def test_a_run_cancelled_before_its_turn_leaves_nothing_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    state = handlers.State(OperatorSettings())

    async def never_starts(state_: handlers.State, key: tuple[str, str], permanent: bool) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(handlers, "_run", never_starts)
    waiting = asyncio.create_task(handlers._run_quietly(state, KEY))
    await asyncio.sleep(0)
    assert KEY in state.queued
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert state.queued == {}  # a later trigger is not skipped forever
