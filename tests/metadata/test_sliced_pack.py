"""sliced_packb: the same bytes as msgpack.packb, never more than SLICE items of a list per call."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from pyraft.metadata.commands import MetadataCommand, encode_command, register_broker
from pyraft.metadata.sliced_pack import SLICE, sliced_packb
from pyraft.metadata.snapshot import restore_store
from pyraft.metadata.store import MetadataStore


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.randrange(-(2**40), 2**40)
    if kind == 1:
        return "".join(rng.choice("abcé€𝄞") for _ in range(rng.randrange(40)))
    if kind == 2:
        return rng.randbytes(rng.randrange(40))
    if kind == 3:
        return rng.choice([None, True, False, 1.5])
    if kind == 4:
        return rng.randrange(256)
    size = rng.choice([0, 1, 15, 16, 17, SLICE - 1, SLICE, SLICE + 1, 2 * SLICE + 5, 70_000])
    items = [random_value(rng, depth + 3) for _ in range(size)] if size <= 17 else list(range(size))
    if kind == 5:
        return items
    if kind == 6:
        return tuple(items)
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))] + [items]


@pytest.mark.parametrize("seed", range(40))
def test_same_bytes_as_packb(seed: int) -> None:
    value = random_value(random.Random(seed))
    assert sliced_packb(value) == msgpack.packb(value, use_bin_type=True)


def test_a_snapshot_shaped_value() -> None:
    """Long columns deep inside short lists, as a snapshot image holds them."""
    column = [f"broker-{i}.example" for i in range(3 * SLICE + 7)]
    coded = [["rack-a", "rack-b"], [i % 2 for i in range(3 * SLICE + 7)]]
    image = [2, 123, [[17, 3, [column, coded, list(range(3 * SLICE + 7))]], [1, 0, [[], []]]], [10, []]]
    assert sliced_packb(image) == msgpack.packb(image, use_bin_type=True)
    assert msgpack.unpackb(sliced_packb(image), raw=False) == image


class RecordingPacker(msgpack.Packer):  # type: ignore[misc]
    """Remembers the longest list any single pack call was handed, at any depth."""

    largest = 0

    def pack(self, obj: Any) -> bytes:
        RecordingPacker.largest = max(RecordingPacker.largest, _longest(obj))
        packed: bytes = super().pack(obj)
        return packed


def _longest(obj: Any) -> int:
    if isinstance(obj, list | tuple):
        return max([len(obj), *map(_longest, obj)])
    return 0


def test_no_pack_call_covers_more_than_a_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps the event loop running: each call into msgpack's C code (which holds the GIL
    throughout) gets at most SLICE items of a long list, whatever the nesting."""
    columns = [list(range(5 * SLICE)), [["x"], [0] * (4 * SLICE)]]
    image = [2, 7, [[1, 0, columns]], [0, [("k", b"v")] * SLICE * 2]]
    expected = msgpack.packb(image, use_bin_type=True)
    monkeypatch.setattr(msgpack, "Packer", RecordingPacker)  # sliced_pack's msgpack is this module
    RecordingPacker.largest = 0
    assert sliced_packb(image) == expected
    assert RecordingPacker.largest == SLICE


def test_a_store_snapshot_is_packed_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot encoder goes through sliced_packb: a store with more brokers than a slice
    never hands msgpack a whole column at once, and the bytes restore to the same store."""
    store = MetadataStore()
    for broker_id in range(1, SLICE + 50):
        store.apply(
            broker_id, encode_command(MetadataCommand(register_broker(broker_id, "h", 9092, "PLAINTEXT")))
        )
    encode = store.capture()
    monkeypatch.setattr(msgpack, "Packer", RecordingPacker)
    RecordingPacker.largest = 0
    data = encode()
    assert 0 < RecordingPacker.largest <= SLICE
    assert restore_store(data).brokers() == store.brokers()
