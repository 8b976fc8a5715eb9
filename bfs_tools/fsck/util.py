"""Helpers shared by the check passes."""

from __future__ import annotations

from ..codec import field_unpacker
from ..errors import BfsError
from ..formats.constants import U32_MAX
from ..formats.ids import BtreeId, KeyType
from ..fs.inode import Inode, InodeValue, decode_inode
from ..keys import fmt_pos
from ..snapshots.table import SnapshotTable

BATCH = 2000


def loc(btree: int, pos) -> str:
    try:
        name = BtreeId(btree).name
    except ValueError:
        name = f"btree{btree}"
    return f"{name}:{fmt_pos(pos)}"


def table(ctx) -> SnapshotTable:
    t = ctx.state.get("table")
    if t is None:
        t = ctx.state["table"] = SnapshotTable.load(ctx.store.btrees)
    return t


def visible_set(ctx, snap: int) -> frozenset[int]:
    cache = ctx.state.get("visible")
    if cache is None or cache[0] is not ctx.state.get("table"):
        cache = ctx.state["visible"] = (table(ctx), {})
    got = cache[1].get(snap)
    if got is None:
        try:
            got = cache[0].ancestors(snap)
        except BfsError:
            got = frozenset({snap})
        cache[1][snap] = got
    return got


def doomed(ctx, snap: int) -> bool:
    cached = ctx.state.get("doomed")
    if cached is not None:
        return snap in cached
    return _doomed(ctx, snap)


def _doomed(ctx, snap: int) -> bool:
    """Is `snap` a node an interrupted snapshot deletion has yet to drop (dead) or
    fold into its only child? Its keys are being removed or moved in batches, so
    per-snapshot consistency does not hold for it until cleanup finishes (which
    `check -y` does before the content passes; `-n` must not report its keys)."""
    cached = ctx.state.get("doomed")
    if cached is None:
        from ..snapshots.cleanup import plan

        cached = ctx.state["doomed"] = frozenset(plan(table(ctx)).doomed)
    return snap in cached


_S_IFMT, _S_IFDIR, _S_IFREG, _S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000
_INODE_SIZE = InodeValue.SIZE
# only what the passes read (of 24 fields): a third of the decoding of every inode
_CACHED = ("mode", "nlink", "size", "sectors", "hash_seed", "subvol", "dir", "dir_offset")
_unpack_inode = field_unpacker("InodeValue", *_CACHED)


class CInode:
    """An inode version as the check caches it (every inode of the image is in
    the cache: small, read-only). Its raw value is kept; copy() gives the full
    fs Inode to change and write back. (Slots, not a tuple: the passes read its
    fields many times, and slot reads are the fastest attribute reads.)"""

    __slots__ = ("inum", "snapshot", "key_snapshot", "val") + _CACHED

    @property
    def is_dir(self) -> bool:
        return self.mode & _S_IFMT == _S_IFDIR

    @property
    def is_reg(self) -> bool:
        return self.mode & _S_IFMT == _S_IFREG

    @property
    def is_lnk(self) -> bool:
        return self.mode & _S_IFMT == _S_IFLNK

    def full(self) -> Inode:
        from ..keys import Key

        ino = decode_inode(Key((0, self.inum, self.key_snapshot), KeyType.inode, self.val))
        ino.snapshot = self.snapshot
        return ino

    copy = full

    def key(self, snapshot: int | None = None):
        return self.full().key(snapshot)


def cinode(k) -> CInode | None:
    """The cached form of inode key k (None: not a decodable inode)."""
    val = k.val
    if len(val) != _INODE_SIZE:
        return None
    c = CInode.__new__(CInode)
    _, c.inum, c.snapshot = k.pos
    c.key_snapshot = c.snapshot
    c.val = val
    (c.mode, c.nlink, c.size, c.sectors, c.hash_seed, c.subvol, c.dir,
     c.dir_offset) = _unpack_inode(val)
    return c


def inode_versions(ctx) -> dict[int, list[tuple[int, CInode | None]]]:
    """inum -> [(snapshot, CInode or None for a whiteout)] in ascending snapshot order."""
    cached = ctx.state.get("inodes")
    if cached is not None:
        return cached
    out: dict[int, list[tuple[int, CInode | None]]] = {}
    get = out.get
    inode_type = KeyType.inode
    new, unpack, size = object.__new__, _unpack_inode, _INODE_SIZE
    # (cinode() inline: this runs on every inode of the image)
    for k in ctx.store.btrees.key_list(BtreeId.inodes):
        _, inum, snap = k.pos
        if k.type == inode_type:
            val = k.val
            if len(val) != size:
                continue
            c = new(CInode)
            c.inum, c.snapshot, c.key_snapshot, c.val = inum, snap, snap, val
            (c.mode, c.nlink, c.size, c.sectors, c.hash_seed, c.subvol, c.dir,
             c.dir_offset) = unpack(val)
        else:
            c = None
        vers = get(inum)
        if vers is None:
            out[inum] = [(snap, c)]
        else:
            vers.append((snap, c))
    ctx.state["inodes"] = out
    return out


def drop_inode_cache(ctx) -> None:
    ctx.state.pop("inodes", None)


def inode_seen_from(versions, visible) -> Inode | None:
    """The inode version a snapshot sees (None: none, or a whiteout)."""
    for snap, ino in versions or ():
        if snap in visible:
            return ino
    return None


def inode_for(ctx, versions, inum: int, snap: int) -> Inode | None:
    """The inode a key of `inum` at snapshot `snap` belongs to: the version snap
    sees, or else a version in a snapshot below snap (a key in an interior
    snapshot is only used by the leaves under it, which may have their own
    version of its inode). None: the key belongs to nothing."""
    vers = versions.get(inum) if isinstance(versions, dict) else versions
    if not vers:
        return None
    ino = inode_seen_from(vers, visible_set(ctx, snap))
    if ino is not None:
        return ino
    for s, i in vers:
        if i is not None and s != snap and snap in visible_set(ctx, s):
            return i
    return None


def range_of(inum: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (inum, 0, 0), (inum, (1 << 64) - 1, U32_MAX)


class Batch:
    """Repairs queued into transactions of at most BATCH updates.

    With -n (a read-only store) the transactions are never committed: their
    updates are applied to the tree in memory only (no triggers, nothing
    written), so the passes after see what -y would leave."""

    def __init__(self, ctx, *, triggers: bool = True):
        self.ctx = ctx
        self.triggers = triggers
        self.trans = None
        self.n = 0

    def t(self):
        if self.trans is None:
            self.trans = self._new()
        self.n += 1
        if self.n >= BATCH:
            self.flush()
            self.trans = self._new()
            self.n = 1
        return self.trans

    def _new(self):
        store = self.ctx.store
        if store.read_only:
            from ..trans import Transaction

            return Transaction(store)
        return store.transaction()

    def flush(self) -> None:
        if self.trans is None:
            return
        t, self.trans = self.trans, None
        self.n = 0
        if not t.updates:
            return
        drop_inode_cache(self.ctx)   # the inodes the passes cache may have changed
        store = self.ctx.store
        if store.read_only or (not self.triggers and not self.ctx.state.get("alloc_trusted")):
            apply_direct(store, t.updates, t._sorted)
            return
        t.commit(run_triggers=self.triggers, journal=False if not self.triggers else None)


def apply_direct(store, updates: dict, order: dict | None = None) -> None:
    """Updates straight into the tree: in memory only with -n; before the alloc
    pass of a repairing check, as unjournalled changes of dirty nodes, which the
    next commit writes (no node is written, so none moves, before the alloc
    pass has counted them: runner.py)."""
    apply = store.btrees.apply
    seq = 0 if store.read_only else store.journal.seq
    for btree_id, pending in updates.items():
        for pos in (order[btree_id] if order is not None else sorted(pending)):
            apply(btree_id, pending[pos], seq, False)
