"""The scheduler's courier: `drain` returns only once every item handed over so far is on its queue."""

from __future__ import annotations

import queue

from realizar_ort.generation.scheduler import _Courier


def test_drain_waits_for_every_item_handed_over() -> None:
    courier = _Courier()
    try:
        outs = [queue.SimpleQueue() for _ in range(4)]
        delivered = 0
        for step in range(300):  # many hand-overs, each drained at once: the courier is mid-batch or idle
            courier.hand_over([(out, (step, j)) for j, out in enumerate(outs) for _ in range(1 + step % 5)])
            delivered += 1 + step % 5
            courier.drain()
            assert [out.qsize() for out in outs] == [delivered] * 4
        for j, out in enumerate(outs):  # and in order, per queue
            items = [out.get_nowait() for _ in range(delivered)]
            assert [step for step, _ in items] == sorted(step for step, _ in items)
            assert {k for _, k in items} == {j}
    finally:
        courier.close()


def test_drain_when_nothing_was_handed_over_returns() -> None:
    courier = _Courier()
    try:
        courier.drain()
        courier.hand_over([])
        courier.drain()
    finally:
        courier.close()
