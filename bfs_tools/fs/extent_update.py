"""Replacing a range of a file's extents in one snapshot, keeping the snapshot
invariant of the extents btree.

Invariant (bcachefs): two keys of one file in snapshots that are ancestor and
descendant (or the same) either cover exactly the same range or do not
overlap. Then, reading from snapshot S, the nearest visible key at each end
position wins and the winners never overlap.

`replace_range(trans, inum, S, start, end, new_keys)` makes S see exactly
`new_keys` (which lie inside [start, end); gaps read as holes) and leaves every
other snapshot's view unchanged:

 1. chain keys: the keys overlapping [start, end) whose snapshot S sees (S's
    own and its ancestors'). In end order their ranges are disjoint or equal.
 2. a chain key straddling `start` or `end` is cut there. So that no other
    snapshot's keys start to overlap it partially, every key at the same end
    position with the same range (same data in a sibling snapshot) is cut too.
 3. S's own keys inside the range are removed; the new keys are cut at every
    boundary of the remaining (ancestor) chain keys, so they coincide with them
    or avoid them; an ancestor key left uncovered gets a whiteout at S.

S is always a leaf of the snapshot tree (subvolumes only point at leaves), so
no descendant of S has keys to keep consistent.
"""

from __future__ import annotations

from ..extents import cut
from ..formats.constants import U32_MAX, U64_MAX
from ..formats.ids import BtreeId, KeyType
from ..keys import Key

E = BtreeId.extents
_COUNTED = (KeyType.extent, KeyType.inline_data, KeyType.reflink_p)


def chain_keys(trans, inum: int, start: int, end: int, visible) -> list[Key]:
    """Keys of snapshots in `visible` overlapping [start, end), in position order."""
    out = []
    for k in trans.iter(E, (inum, start + 1, 0), (inum, U64_MAX, U32_MAX)):
        if k.pos[2] not in visible:
            continue
        if k.start >= end:
            break
        out.append(k)
    return out


def visible_sectors(keys: list[Key]) -> int:
    """Sectors of data keys among position-ordered chain keys (nearest per position)."""
    total = 0
    last = None
    for k in keys:
        if k.pos[1] == last:
            continue
        last = k.pos[1]
        if k.type in _COUNTED:
            total += k.size
    return total


def _cut_everywhere(trans, key: Key, points: list[int]) -> None:
    """Cut `key` and every same-range key of other snapshots at `points`."""
    inum, end, _ = key.pos
    for k in list(trans.iter(E, (inum, end, 0), (inum, end, U32_MAX))):
        if k.start != key.start:
            continue
        bounds = [k.start] + [p for p in points if k.start < p < k.end] + [k.end]
        for a, b in zip(bounds, bounds[1:], strict=False):
            trans.update(E, cut(k, a, b))


def replace_range(trans, inum: int, snapshot: int, start: int, end: int, new_keys: list[Key],
                  visible) -> int:
    """Make `snapshot` see `new_keys` in [start, end) (sectors). Returns the change
    in sectors of data the snapshot sees (for the inode's `sectors`)."""
    assert start < end
    points = sorted({start, end} | {nk.start for nk in new_keys} | {nk.end for nk in new_keys})
    before = chain_keys(trans, inum, start, end, visible)
    cut_positions = set()
    for k in before:
        if k.pos[1] not in cut_positions and any(k.start < p < k.end for p in points):
            cut_positions.add(k.pos[1])
            _cut_everywhere(trans, k, points)
    if cut_positions:
        before = chain_keys(trans, inum, start, end, visible)
    old_sectors = visible_sectors(before)
    # S's own keys go; the ancestors' keys stay and shape the new ones
    ancestors: dict[int, Key] = {}    # end -> nearest ancestor key ending there
    for k in before:
        if k.pos[2] == snapshot:
            trans.delete(E, k.pos)
        elif k.pos[1] not in ancestors:
            ancestors[k.pos[1]] = k
    bounds = sorted({a.start for a in ancestors.values()} | set(ancestors))
    covered: set[int] = set()         # ancestor positions a new piece now shadows
    new_sectors = 0
    for nk in new_keys:
        assert start <= nk.start and nk.end <= end and nk.pos[2] == snapshot, (nk, start, end)
        pts = [nk.start] + [b for b in bounds if nk.start < b < nk.end] + [nk.end]
        for a, b in zip(pts, pts[1:], strict=False):
            piece = nk if (a, b) == (nk.start, nk.end) else cut(nk, a, b)
            trans.update(E, piece)
            anc = ancestors.get(b)
            if anc is not None and anc.start == a:
                covered.add(b)
            if piece.type in _COUNTED:
                new_sectors += piece.size
    for pos_end, anc in ancestors.items():
        if pos_end not in covered and anc.type != KeyType.whiteout:
            trans.update(E, Key((inum, pos_end, snapshot), KeyType.whiteout, size=anc.size))
    return new_sectors - old_sectors
