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
    builds nothing unbounded here).

    Where a range's keys begin and end in its leaf is looked for from where
    the previous range's began, one or two keys on first, then by bisection:
    ranges of one key or none each (a tree copy's inodes, files of one
    extent) cost a few comparisons instead of two bisections of the leaf."""
    leaf = None
    prev = None
    for start, end in ranges:
        # (a start before the previous one, against the order asked for, is
        # looked for from the root, as a range in another leaf is)
        if leaf is None or start > leaf.max_key or start < prev:
            leaf = btrees.find_leaf(btree_id, start)
            positions = leaf.positions
            n = len(positions)
            i = 0   # every key before index i is before `start`
        prev = start
        if end > leaf.max_key:     # the range goes on in the next leaves
            yield spill if spill is not None else list(btrees.iter(btree_id, start, end))
            continue
        if i < n and positions[i] < start:
            i += 1
            if i < n and positions[i] < start:
                i = bisect_left(positions, start, i + 1)
        j = i
        if j < n and positions[j] <= end:
            j += 1
            if j < n and positions[j] <= end:
                j = bisect_right(positions, end, j + 1)
        yield leaf.keys[i:j]
