"""`dump btree`: the keys of one btree, or the nodes of one level of it.

Keys are printed one per line with `keys.key_to_text`, or as JSON Lines with
`keys.key_to_json`. By default every version of every key is shown (all
snapshots, like `bcachefs list`); `snapshot=` shows what one snapshot sees.
`level=` shows the nodes at that level instead: a header line per node (range,
location, fill) followed by its keys (interior levels hold btree_ptr keys).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from ..btree.node import Node
from ..errors import NotFoundError, UsageError
from ..formats.constants import U32_MAX
from ..formats.ids import SNAPSHOT_BTREES, BtreeId
from ..keys import (
    POS_MAX,
    POS_MIN,
    Key,
    Pos,
    filter_visible,
    fmt_pos,
    key_to_json,
    key_to_text,
    pos_succ,
)
from ..keys import parse_pos as _parse_pos
from . import printable


def parse_pos(text: str, *, end: bool = False) -> Pos:
    """A position for --start/--end. Without a snapshot field, --end means the
    last snapshot of that (inode, offset) (U32_MAX), --start the first (0)."""
    try:
        pos = _parse_pos(text)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if end and text.strip().count(":") == 1:
        pos = (pos[0], pos[1], U32_MAX)
    return pos


def pos_json(p: Pos) -> dict:
    return {"inode": p[0], "offset": p[1], "snapshot": p[2]}


def fill_percent(node: Node, capacity: int) -> float:
    return 100.0 * node.bytes / capacity if capacity > 0 else 0.0


# ---------------------------------------------------------------------------- keys


def check_range(start: Pos, end: Pos) -> None:
    if start > end:
        raise UsageError(f"--start {fmt_pos(start)} is after --end {fmt_pos(end)}")


def snapshot_view(store, btree_id: int, snapshot: int) -> frozenset[int]:
    """The snapshot ids visible from `snapshot` (it and its ancestors)."""
    from ..snapshots.table import SnapshotTable

    if btree_id not in SNAPSHOT_BTREES:
        raise UsageError(f"btree {BtreeId(btree_id).name} has no snapshots: --snapshot applies "
                         f"to {', '.join(sorted(b.name for b in SNAPSHOT_BTREES))}")
    table = SnapshotTable.load(store.btrees)
    if snapshot not in table:
        raise NotFoundError(f"snapshot {snapshot} does not exist")
    return table.ancestors(snapshot)


def iter_keys(store, btree_id: int, start: Pos = POS_MIN, end: Pos = POS_MAX,
              snapshot: int | None = None) -> Iterator[Key]:
    """Keys of a btree in [start, end]; every version, or those `snapshot` sees."""
    check_range(start, end)
    if snapshot is None:
        yield from store.btrees.iter(btree_id, start, end)
        return
    visible = snapshot_view(store, btree_id, snapshot)
    yield from filter_visible(store.btrees.iter(btree_id, start, end), visible)


def keys_text(keys) -> Iterator[str]:
    for k in keys:
        yield printable(key_to_text(k))


def keys_json(keys, btree_id: int) -> Iterator[dict]:
    for k in keys:
        yield key_to_json(k, btree_id)


# ---------------------------------------------------------------------------- levels


def child_range(node: Node, idx: int) -> tuple[Pos, Pos]:
    lo = node.min_key if idx == 0 else pos_succ(node.keys[idx - 1].pos)
    return lo, node.keys[idx].pos


def _overlapping(node: Node, start: Pos, end: Pos) -> list[int]:
    """Indexes of the keys of `node` relevant to [start, end]: leaf keys inside
    it; interior keys (child pointers) whose child range overlaps it."""
    i = bisect_left(node.positions, start)
    out = []
    for j in range(i, len(node.keys)):
        if node.level == 0:
            if node.keys[j].pos > end:
                break
        elif child_range(node, j)[0] > end:
            break
        out.append(j)
    return out


def root_level(store, btree_id: int) -> int:
    return store.btrees.roots[btree_id].level


def nodes_at_level(store, btree_id: int, level: int, start: Pos = POS_MIN,
                   end: Pos = POS_MAX) -> Iterator[tuple[Node, list[Key]]]:
    """(node, its keys within [start, end]) for each node at `level` overlapping
    the range, in key order. Only the nodes on the way are read."""
    check_range(start, end)
    btrees = store.btrees
    root = btrees.roots[btree_id]
    if level > root.level:
        raise UsageError(f"--level {level}: btree {BtreeId(btree_id).name} has "
                         + ("only level 0" if root.level == 0 else f"levels 0..{root.level}"))
    stack = [root]
    while stack:
        node = stack.pop()
        idxs = _overlapping(node, start, end)
        if node.level == level:
            yield node, [node.keys[i] for i in idxs]
            continue
        for i in reversed(idxs):
            stack.append(btrees.child(node, i))


def node_header_text(node: Node, capacity: int, shown: int | None = None) -> str:
    where = f"sector {node.sector} gen {node.gen}" if node.sector is not None else "unwritten"
    nkeys = len(node.keys)
    keys = f"keys {nkeys}" if shown is None or shown == nkeys else f"keys {nkeys} ({shown} shown)"
    return (f"node level {node.level} {fmt_pos(node.min_key)}..{fmt_pos(node.max_key)} "
            f"{where} {keys} bytes {node.bytes}/{capacity} "
            f"({fill_percent(node, capacity):.0f}% full)")


def node_to_json(node: Node, capacity: int, keys: list[Key] | None = None) -> dict:
    keys = node.keys if keys is None else keys
    return {
        "btree": BtreeId(node.btree_id).name,
        "level": node.level,
        "min_key": pos_json(node.min_key),
        "max_key": pos_json(node.max_key),
        "sector": node.sector,
        "gen": node.gen,
        "node_seq": f"{node.node_seq:016x}",
        "nr_keys": len(node.keys),
        "bytes": node.bytes,
        "capacity": capacity,
        "fill_percent": round(fill_percent(node, capacity), 1),
        "keys": [key_to_json(k, node.btree_id) for k in keys],
    }


def node_text(node: Node, keys: list[Key], capacity: int) -> Iterator[str]:
    yield node_header_text(node, capacity, len(keys))
    for k in keys:
        yield "  " + printable(key_to_text(k))
