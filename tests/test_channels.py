"""hand_over queues without a scheduler pass when there is room, and waits when the channel is full."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pyraft.channels import hand_over


async def test_an_item_with_room_is_queued_without_a_checkpoint() -> None:
    send, receive = trio.open_memory_channel[int](1)
    with trio.testing.assert_no_checkpoints():
        await hand_over(send, 1)
    assert receive.receive_nowait() == 1


async def test_a_full_channel_makes_it_wait_for_room() -> None:
    send, receive = trio.open_memory_channel[int](1)
    await hand_over(send, 1)
    handed: list[int] = []

    async def second() -> None:
        await hand_over(send, 2)
        handed.append(2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert handed == []  # still waiting for room
        assert receive.receive_nowait() == 1
    assert handed == [2]
    assert receive.receive_nowait() == 2


async def test_a_closed_receiver_is_reported_as_with_send() -> None:
    send, receive = trio.open_memory_channel[int](1)
    await receive.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await hand_over(send, 1)
