"""btree/node.py _decode_bset (the fixed-size-keys fast path every node read of
check goes through) gives exactly what keys.decode_keys gives: the same keys,
or the same error."""

from __future__ import annotations

import random

import pytest

from bfs_tools.btree.node import _decode_bset
from bfs_tools.errors import FormatError
from bfs_tools.keys import Key, decode_keys, encode_keys


def _same(buf: bytes, start: int, end: int, nkeys: int) -> None:
    try:
        want = decode_keys(buf, start, end, "w")
    except FormatError as e:
        with pytest.raises(FormatError) as got:
            _decode_bset(buf, start, end, nkeys, "w")
        assert str(got.value) == str(e)
        return
    got = _decode_bset(buf, start, end, nkeys, "w")
    assert [(k.pos, k.type, k.size, k.version, k.val) for k in got] == \
        [(k.pos, k.type, k.size, k.version, k.val) for k in want]
    assert all(type(k.val) is bytes for k in got)


def _keys(lengths, rng) -> list[Key]:
    return [Key((rng.randrange(1 << 64), rng.randrange(1 << 64), rng.randrange(1 << 32)),
                rng.randrange(256), rng.randbytes(n), size=rng.randrange(1 << 32),
                version=rng.randrange(1 << 64)) for n in lengths]


@pytest.mark.parametrize("lengths", [
    [128] * 50,            # an inodes bset
    [8] * 3, [0] * 7, [5],
    [10, 30], [30, 10], [20, 20],   # same total as [20, 20]: the fast path must not split it
    [16, 16, 16, 17], [3, 100, 3],
])
def test_same_as_decode_keys(lengths):
    rng = random.Random(len(lengths) * 1000 + sum(lengths))
    body = encode_keys(_keys(lengths, rng))
    buf = b"pad" + body + b"tail"
    _same(buf, 3, 3 + len(body), len(lengths))
    # a key count that the bytes do not hold, and cut bsets: the same keys or error
    _same(buf, 3, 3 + len(body), len(lengths) + 1)
    for cut in (1, 35, 36, len(body) // 2):
        if cut < len(body):
            _same(buf, 3, 3 + len(body) - cut, len(lengths))


def test_equal_total_other_lengths():
    """Two keys of 10 and 30 bytes take what two of 20 would: decoded key by key."""
    rng = random.Random(7)
    body = encode_keys(_keys([10, 30], rng))
    got = _decode_bset(body, 0, len(body), 2, "w")
    assert [len(k.val) for k in got] == [10, 30]
