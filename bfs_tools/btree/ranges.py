"""Reading many small ranges of one btree in ascending order (the inodes, data
keys and xattrs of a tree being copied): consecutive ranges that fall in one
leaf share its descent from the root, as Btrees.apply_many does for writes."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from ..keys import Key, Pos


def read_ranges(btrees, btree_id: int, ranges: Iterable[tuple[Pos, Pos]],
                spill: object = None) -> Iterator[list[Key] | object]:
    """For each (start, end) of `ranges`, in ascending order of start, the keys
    with start <= pos <= end. The btree must not change while this runs.

    A range that goes on into the next leaves is read through them, or, when
    `spill` is given, yields `spill` instead: the caller then reads it on its
    own, lazily (a file of many extents, or a hostile image's flood of keys,
    builds nothing unbounded here)."""
    leaf = None
    for start, end in ranges:
        if leaf is None or start < leaf.min_key or start > leaf.max_key:
            leaf = btrees.find_leaf(btree_id, start)
        if end <= leaf.max_key:
            positions = leaf.positions
            yield leaf.keys[bisect_left(positions, start):bisect_right(positions, end)]
        elif spill is not None:
            yield spill
        else:       # the range goes on in the next leaves
            yield list(btrees.iter(btree_id, start, end))
