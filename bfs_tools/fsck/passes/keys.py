"""Pass keys: every key valid for its type and btree; snapshot btrees' keys in
existing snapshots.

Invalid keys are deleted (without triggers: the alloc pass that follows
recomputes everything derived from the remaining keys) — except where a
better repair keeps the data: an inode whose only problem is its file type
gets the type its dirents and data say it has (inode_bad_mode), and dirents
with a bad name or type are left to the dirents pass (dirent_bad_name,
dirent_type_wrong), which renames or retypes them in place.

With -n nothing is written, but the keys that -y would delete are dropped
from the tree in memory, so the later passes judge what -y would leave and
never trip over a value they cannot decode.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator

from ...formats.constants import KEY_VALUE_MAX, ROOT_INODE, U64_MAX
from ...formats.ids import BTREE_KEY_TYPES, EXTENT_BTREES, SNAPSHOT_BTREES, BtreeId, KeyType
from ...fs.dirent import DirentHead
from ...fs.inode import InodeValue
from ...fs.inode import _validate as validate_inode
from ...keys import Key, btree_name, type_name
from ..util import Batch, loc, table

INODES, D, E = BtreeId.inodes, BtreeId.dirents, BtreeId.extents


def classifier(btree: int):
    """invalid(keys, snapshots=None) -> (key, error name, message) for each invalid
    key of `btree` among `keys`, in order; with `snapshots` (the ids that exist),
    a key of a snapshot btree in another snapshot is invalid too. The constants
    of the btree are bound once and the checks are inline in one loop: it runs on
    every key of the image."""
    from ...errors import FormatError
    from ...keys import REGISTRY, load_all_key_types

    load_all_key_types()
    allowed = frozenset(BTREE_KEY_TYPES.get(btree, ()))
    extent = btree in EXTENT_BTREES
    snaps = btree in SNAPSHOT_BTREES
    inum_first = btree in (E, D, BtreeId.xattrs)
    inodes, dirents = btree == INODES, btree == D
    validators = {t: REGISTRY[t].validate for t in allowed if REGISTRY[t].validate}
    inode_t, dirent_t = KeyType.inode, KeyType.dirent
    dirent_head = DirentHead.SIZE

    def invalid(keys, snapshots=None) -> Iterator[tuple[Key, str, str]]:
        check_snapshots = snaps and snapshots is not None
        for k in keys:
            t = k.type
            if t not in allowed:
                yield k, "key_type_not_allowed", (f"key type {type_name(t)} not allowed in "
                                                  f"btree {btree_name(btree)}")
                continue
            val = k.val
            if len(val) > KEY_VALUE_MAX:
                yield k, "key_bad_value", "value too long"
                continue
            pos = k.pos
            if extent:
                if k.size == 0 or k.size > pos[1]:
                    yield k, "key_bad_pos", f"bad extent size {k.size} for end {pos[1]}"
                    continue
            elif k.size != 0:
                yield k, "key_bad_pos", f"nonzero size {k.size} in a non-extent btree"
                continue
            if not snaps and pos[2] != 0:
                yield k, "key_bad_pos", f"snapshot field {pos[2]} in a btree without snapshots"
                continue
            if inodes and t == inode_t and (pos[0] != 0 or not ROOT_INODE <= pos[1] < U64_MAX):
                yield k, "key_bad_pos", (f"inode key position not (0, {ROOT_INODE} <= inum "
                                         "< U64_MAX)")
                continue
            if inum_first and not ROOT_INODE <= pos[0] < U64_MAX:
                yield k, "key_bad_pos", f"inode number {pos[0]} out of range"
                continue
            # (dirents: name and type problems are repaired in place by the dirents pass)
            v = None if dirents and t == dirent_t and len(val) >= dirent_head else validators.get(t)
            if v is not None:
                try:
                    problem = v(btree, k)
                except FormatError as e:
                    problem = str(e)
                if problem:
                    if inodes and t == inode_t and len(val) == InodeValue.SIZE \
                            and "file type" in problem:
                        yield k, "inode_bad_mode", problem
                    else:
                        yield k, "key_bad_value", problem
                    continue
            if check_snapshots and pos[2] not in snapshots:
                yield k, "key_in_missing_snapshot", f"snapshot {pos[2]} does not exist"

    return invalid


def classify(btree: int, k: Key) -> tuple[str, str] | None:
    """(error name, message) if key k of `btree` is invalid, else None."""
    for _k, name, problem in classifier(btree)([k]):
        return name, problem
    return None


def run(ctx) -> None:
    bt = ctx.store.btrees
    snaps = table(ctx).snapshots
    batch = Batch(ctx, triggers=False)
    for btree in BtreeId:
        for k, name, problem in classifier(btree)(bt.key_list(btree), snaps):
            if name == "inode_bad_mode":
                _bad_mode(ctx, batch, k, problem)
                continue
            if ctx.act(name, loc(btree, k.pos), problem + "; deleted"):
                batch.t().delete(btree, k.pos)
    batch.flush()
    ctx.state.pop("inodes", None)


def _bad_mode(ctx, batch, k: Key, problem: str) -> None:
    """An inode with no valid file type: a directory if it has dirents, else a
    regular file (data or not). Other validation problems are checked after."""
    bt = ctx.store.btrees
    inum = k.pos[1]
    has_dirents = bt.peek(D, (inum, 0, 0), (inum, (1 << 64) - 1, 0xFFFFFFFF)) is not None
    fmt = stat.S_IFDIR if has_dirents else stat.S_IFREG
    v = InodeValue.unpack(k.val)
    new = Key(k.pos, k.type, v._replace(mode=fmt | stat.S_IMODE(v.mode)).pack())
    fixed_problem = validate_inode(INODES, new)
    what = "directory" if has_dirents else "regular file"
    if fixed_problem:
        # more is wrong than the type: the inode cannot be kept
        if ctx.act("key_bad_value", loc(INODES, k.pos), f"{problem}, {fixed_problem}; deleted"):
            batch.t().delete(INODES, k.pos)
        return
    if ctx.act("inode_bad_mode", loc(INODES, k.pos), f"{problem}; made a {what}"):
        batch.t().update(INODES, new)
