"""Passes inodes and extents, done together one file at a time.

For every inode number: each extent key must belong to an inode the key's
snapshot sees, of a type that has data (regular file or symlink); keys of one
snapshot must not overlap; keys of related snapshots (one an ancestor of the
other) must cover the same range or not overlap (the snapshot invariant).
Then each inode version's `sectors` must equal the data its snapshot sees, and
no data may lie past its size (rounded up to a block).
With --verify-data every extent's data is read and its checksum verified.
"""

from __future__ import annotations

import stat
from itertools import islice
from operator import attrgetter, itemgetter, le, sub

from ...checksum import checksum
from ...errors import BfsError
from ...extents import cut, decode_extent
from ...formats.ids import BtreeId, KeyType
from ...keys import Key
from ..util import Batch, doomed, inode_for, inode_versions, loc, visible_set

E, INODES = BtreeId.extents, BtreeId.inodes
COUNTED = frozenset({KeyType.extent, KeyType.inline_data, KeyType.reflink_p})
_pos_of, _type_of, _size_of = attrgetter("pos"), attrgetter("type"), attrgetter("size")
_offset_of, _snapshot_of = itemgetter(1), itemgetter(2)


def run_extents(ctx) -> None:
    versions = inode_versions(ctx)
    batch = Batch(ctx)
    vis_cache: dict[int, frozenset] = {}
    is_doomed: dict[int, bool] = {}   # snapshot -> doomed(ctx, snapshot)
    data_types = frozenset({KeyType.extent, KeyType.inline_data, KeyType.reflink_p,
                            KeyType.error})
    quick = not ctx.verify_data

    for inum, keys in extents_by_inum(ctx).items():
        vers = versions.get(inum)
        if quick and vers is not None and len(vers) == 1:
            # the common case, quickly: one inode version, a file, that sees its
            # data keys, which are of one snapshot and do not overlap (nothing
            # for _check_file to find)
            k = keys[0]
            snap, ino = vers[0]
            visible = vis_cache.get(k.pos[2])
            if visible is None:
                visible = vis_cache[k.pos[2]] = visible_set(ctx, k.pos[2])
            if ino is not None and snap in visible and (
                    ino.mode & 0o170000 in (0o100000, 0o120000)) and (
                    k.type in data_types if len(keys) == 1
                    else _apart(keys, k.pos[2], data_types)):
                d = is_doomed.get(snap)
                if d is None:
                    d = is_doomed[snap] = doomed(ctx, snap)
                if not d:
                    continue
        _check_file(ctx, batch, inum, keys, vers)
    batch.flush()
    if ctx.verify_data:
        _verify_indirect(ctx)


def _apart(keys: list[Key], snap: int, data_types) -> bool:
    """Are the extent-btree keys of one inode all data keys of snapshot `snap`
    whose ranges do not overlap? In position order their ends then ascend, so
    each must start at or after the end before it. (C-level loops: the files of
    more than one data key come here, and pass in half of _check_file's time:
    ~1 ms of checking the standard library.)"""
    if not set(map(_type_of, keys)) <= data_types:
        return False
    positions = list(map(_pos_of, keys))
    if set(map(_snapshot_of, positions)) != {snap}:
        return False
    ends = list(map(_offset_of, positions))
    starts = map(sub, ends, map(_size_of, keys))
    return all(map(le, ends, islice(starts, 1, None)))


def extents_by_inum(ctx) -> dict[int, list[Key]]:
    """Every extent-btree key, by inode, in key order: one walk for the extents
    and inodes passes (the reflink pass between them changes nothing on a clean
    image; any change of the btrees makes it walk again)."""
    bt = ctx.store.btrees
    cached = ctx.state.get("extents_by_inum")
    if cached is not None and cached[0] == bt.changes:
        return cached[1]
    by_inum: dict[int, list[Key]] = {}
    cur = None
    for k in bt.key_list(E):
        if k.pos[0] != cur:
            cur = k.pos[0]
            group = by_inum[cur] = [k]
        else:
            group.append(k)
    ctx.state["extents_by_inum"] = (bt.changes, by_inum)
    return by_inum


def _verify_indirect(ctx) -> None:
    """Indirect extents (reflink_v) hold the data of every file sharing them: a
    region that does not match its checksum is deleted, and the reflink pass
    then marks the ranges pointing at it lost."""
    from ...reflink import decode_reflink_v

    store = ctx.store
    batch = Batch(ctx)
    for k in list(store.btrees.iter(BtreeId.reflink)):
        if k.type != KeyType.reflink_v:
            continue
        try:
            e = decode_reflink_v(k.val).extent
            data = store.dev.read(e.sector * 512, e.region_sectors * 512)
        except BfsError as err:
            ctx.report("data_checksum_bad", loc(BtreeId.reflink, k.pos),
                       f"cannot read the data: {err}", can_fix=False)
            continue
        if checksum(e.csum_type, data) != e.csum:
            if ctx.act("data_checksum_bad", loc(BtreeId.reflink, k.pos),
                       f"shared data at sector {e.sector} does not match its checksum; the "
                       "indirect extent is deleted (the files sharing it read it as lost)"):
                batch.t().delete(BtreeId.reflink, k.pos)
    batch.flush()


def _check_file(ctx, batch: Batch, inum: int, keys: list[Key], versions) -> None:
    table_vis = {}

    def vis(snap):
        v = table_vis.get(snap)
        if v is None:
            v = table_vis[snap] = visible_set(ctx, snap)
        return v

    alive = []
    one = versions[0][1] if versions is not None and len(versions) == 1 else None
    for k in keys:
        snap = k.pos[2]
        if doomed(ctx, snap):
            continue   # an interrupted snapshot deletion is still removing/moving it
        if k.type == KeyType.whiteout:
            alive.append(k)
            continue
        if one is not None and versions[0][0] in vis(snap):
            ino = one   # the common case: one version of the inode, visible
        else:
            ino = inode_for(ctx, versions, inum, snap)
        if ino is None:
            if ctx.act("extent_no_inode", loc(E, k.pos),
                          f"inode {inum} does not exist in snapshot {k.pos[2]}"):
                batch.t().delete(E, k.pos)
            continue
        if not (stat.S_ISREG(ino.mode) or stat.S_ISLNK(ino.mode)):
            if ctx.act("extent_in_non_regular", loc(E, k.pos),
                          f"inode {inum} is not a regular file or symlink"):
                batch.t().delete(E, k.pos)
            continue
        alive.append(k)
        if ctx.verify_data and k.type == KeyType.extent:
            _verify(ctx, batch, k)
    if len(alive) < 2:
        return
    # overlaps: same snapshot, and related snapshots
    by_start = sorted(alive, key=lambda k: (k.start, k.pos[2]))
    active: list[Key] = []
    for k in by_start:
        active = [a for a in active if a.end > k.start]
        for a in active:
            if a.pos[2] == k.pos[2]:
                if ctx.act("extents_overlap", loc(E, k.pos),
                              f"overlaps {loc(E, a.pos)} in the same snapshot"):
                    batch.t().delete(E, a.pos)
            elif (a.start, a.end) != (k.start, k.end) and (
                    a.pos[2] in vis(k.pos[2]) or k.pos[2] in vis(a.pos[2])):
                if ctx.act("extents_overlap_across_snapshots", loc(E, k.pos),
                              f"partly overlaps {loc(E, a.pos)} of a related snapshot"):
                    t = batch.t()
                    points = sorted({a.start, a.end, k.start, k.end})
                    for x in (a, k):
                        inner = [p for p in points if x.start <= p <= x.end]
                        for lo, hi in zip(inner, inner[1:], strict=False):
                            t.update(E, cut(x, lo, hi))
        active.append(k)


def _verify(ctx, batch: Batch, k: Key) -> None:
    store = ctx.store
    try:
        e = decode_extent(k.val)
        data = store.dev.read(e.sector * 512, e.region_sectors * 512)
    except BfsError as err:
        ctx.report("data_checksum_bad", loc(E, k.pos), f"cannot read the data: {err}",
                   can_fix=False)
        return
    if checksum(e.csum_type, data) != e.csum:
        if ctx.act("data_checksum_bad", loc(E, k.pos),
                      f"data at sector {e.sector} does not match its checksum; the range is "
                      "marked lost"):
            batch.t().update(E, Key(k.pos, KeyType.error, b"", size=k.size))


def run_inodes(ctx) -> None:
    """Each inode version: valid type, sectors and size agree with its data."""
    from ...keys import filter_visible

    block = ctx.store.sb.block_size
    batch = Batch(ctx)
    # every extent-btree key, by inode (not a lookup per inode)
    by_inum = extents_by_inum(ctx)
    ctx.state.pop("extents_by_inum")   # (the last pass that needs them)
    is_doomed: dict[int, bool] = {}   # snapshot -> doomed(ctx, snapshot)
    for inum, vers in inode_versions(ctx).items():
        keys = by_inum.get(inum)
        for snap, ino in vers:
            if ino is None:
                continue
            d = is_doomed.get(snap)
            if d is None:
                d = is_doomed[snap] = doomed(ctx, snap)
            if d:
                continue   # an interrupted snapshot deletion is moving it
            if not keys:
                data = ()
            elif len(vers) == 1 and len(keys) == 1 and keys[0].pos[2] == snap:
                # most files: one version, one key of its own
                data = (keys[0],) if keys[0].type in COUNTED else ()
            elif len(vers) == 1 and set(map(_snapshot_of, map(_pos_of, keys))) == {snap}:
                data = [x for x in keys if x.type in COUNTED]   # one version, its own keys
            else:
                data = [x for x in filter_visible(keys, visible_set(ctx, snap))
                        if x.type in COUNTED]
            fmt = ino.mode & 0o170000
            if data and fmt != stat.S_IFREG and fmt != stat.S_IFLNK:
                continue   # the extents pass deletes data of non-files
            if fmt == stat.S_IFLNK:
                data = _symlink_past_eof(ctx, batch, ino, snap, data)
            if len(data) == 1:   # most files: one extent or inline data
                sectors, end = data[0].size, data[0].pos[1]
            else:   # (x.size and x.end of each, in C-level loops)
                sectors = sum(map(_size_of, data))
                end = max(map(_offset_of, map(_pos_of, data)), default=0)
            limit = -(-ino.size // block) * block
            if ino.sectors == sectors and not (end * 512 > limit and fmt == stat.S_IFREG):
                continue
            ino = ino.full()
            fixed = False
            if ino.sectors != sectors:
                if ctx.act("inode_sectors_wrong", loc(INODES, (0, inum, snap)),
                           f"sectors {ino.sectors}, its data is {sectors}"):
                    ino.sectors = sectors
                    fixed = True
            if end * 512 > limit and ino.is_reg:
                if ctx.act("inode_size_wrong", loc(INODES, (0, inum, snap)),
                           f"size {ino.size} but data reaches byte {end * 512}"):
                    ino.size = end * 512
                    fixed = True
            if fixed:
                batch.t().update(INODES, ino.key(snap))
    batch.flush()


def _symlink_past_eof(ctx, batch: Batch, ino, snap: int, data: list[Key]) -> list[Key]:
    """A symlink's size is its target's length: data after it is not the target's.
    The keys of the symlink's own snapshot past it are dropped (or cut)."""
    limit = -(-ino.size // 512)
    keep = []
    for x in data:
        if x.end <= limit:
            keep.append(x)
            continue
        where = loc(E, x.pos)
        if x.pos[2] != snap:
            ctx.report("extent_past_eof", where, f"symlink {ino.inum} of {ino.size} bytes has "
                       f"data up to sector {x.end}, in another snapshot", can_fix=False)
            keep.append(x)
            continue
        if ctx.act("extent_past_eof", where, f"symlink {ino.inum} of {ino.size} bytes has "
                      f"data up to sector {x.end}; cut at its size"):
            t = batch.t()
            t.delete(E, x.pos)
            if x.start < limit:
                part = cut(x, x.start, limit)
                t.update(E, part)
                keep.append(part)
        else:
            keep.append(x)
    return keep
