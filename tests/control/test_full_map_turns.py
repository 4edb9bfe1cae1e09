"""Full maps take turns: first come, first served, with the event loop running other work between any two."""

from __future__ import annotations

import asyncio
import itertools

from pyheadscale.control.full_maps import FullMapTurns


async def test_full_maps_are_built_in_arrival_order_with_the_loop_running_between_them() -> None:
    turns = FullMapTurns()
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:  # stands for everything else on the loop: reads, handshakes, keep-alives
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    built: list[tuple[int, int]] = []

    async def stream(index: int) -> None:
        async with turns.turn():
            built.append((index, ticks))  # a synchronous build: nothing else runs while it does

    tick_task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    streams = [asyncio.ensure_future(stream(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert turns.waiting == 4  # the first holds the turn, the others queue
    await asyncio.gather(*streams)
    stop.set()
    await tick_task
    assert [index for index, _ in built] == [0, 1, 2, 3, 4]
    seen = [at for _, at in built]
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen
    assert turns.waiting == 0


async def test_a_stream_leaving_while_it_waits_gives_up_its_place() -> None:
    turns = FullMapTurns()
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with turns.turn():
            order.append("first")
            await release.wait()

    async def waiter(name: str) -> None:
        async with turns.turn():
            order.append(name)

    first = asyncio.ensure_future(holder())
    await asyncio.sleep(0.01)
    gone, last = asyncio.ensure_future(waiter("gone")), asyncio.ensure_future(waiter("last"))
    await asyncio.sleep(0.01)
    assert turns.waiting == 2
    gone.cancel()
    await asyncio.sleep(0.01)
    assert turns.waiting == 1
    release.set()
    await asyncio.gather(first, last)
    assert order == ["first", "last"]
