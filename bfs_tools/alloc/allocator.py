"""The allocator: hands out space for btree nodes and file data.

Buckets are filled append-only through write points (one for btree nodes, one
for data) and reused only after they are entirely free. A free bucket comes
from the freespace index; it is skipped if it is open in a write point, was
handed out but is not marked used yet (the alloc keys change only when the
transaction using it commits), or was freed since the last commit (its old
contents may still be what the committed image references, so it must survive
a crash). The gen a bucket gets when
opened (old gen + 1) is carried in every pointer into it.

Data allocation stops short of a small reserve so btree node writes, which
must not fail at commit time, always find space.
"""

from __future__ import annotations

from ..errors import NoSpaceError
from ..formats.ids import AccountingType, BtreeId, DataType
from . import freespace
from .accounting import read_counters
from .alloc_key import alloc_pos, decode_alloc
from .triggers import node_moves_transaction

SECTOR = 512


class WritePoint:
    __slots__ = ("bucket", "gen", "used")

    def __init__(self, bucket: int = 0, gen: int = 0, used: int = 0):
        self.bucket = bucket    # 0: none open
        self.gen = gen
        self.used = used        # bytes of the bucket already handed out


class Allocator:
    def __init__(self, store, *, btree_wp: tuple[int, int] = (0, 0),
                 data_wp: tuple[int, int] = (0, 0)):
        self.store = store
        self.sb = store.sb
        self.bucket_size = store.sb.bucket_size
        self.node_size = store.sb.btree_node_size
        self.wps = {"btree": WritePoint(), "user": WritePoint()}
        self.open: set[int] = set()
        self.unmarked: set[int] = set()     # handed out, alloc key still says free
        self.freed: set[int] = set()        # freed since the last commit
        self.freed_while_open: set[int] = set()
        # buckets never to allocate from (check: everything in use when a repair
        # starts, while the alloc keys are not yet trusted)
        self.protected: set[int] = set()
        self.cursor = self.sb.first_bucket
        usable = self.sb.nbuckets - self.sb.first_bucket
        self.reserve = max(4, usable // 64)
        # a read-only store never allocates: resuming would read the alloc
        # btree's root at every open (the write points matter only to writers)
        for kind, (bucket, used) in (("btree", btree_wp), ("user", data_wp)):
            if bucket and not store.read_only:
                self._resume(kind, bucket, used)

    # ------------------------------------------------------------------ state

    def _resume(self, kind: str, bucket: int, used: int) -> None:
        """Continue filling a partly used bucket recorded at the last clean close."""
        a = decode_alloc(self.store.btrees.get(BtreeId.alloc, alloc_pos(bucket)))
        want = DataType.btree if kind == "btree" else DataType.user
        if a.data_type != want or not (0 < used < self.bucket_size):
            return
        self.wps[kind] = WritePoint(bucket, a.gen, used)
        self.open.add(bucket)

    def write_points(self) -> tuple[tuple[int, int], tuple[int, int]]:
        b, d = self.wps["btree"], self.wps["user"]
        return (b.bucket, b.used if b.bucket else 0), (d.bucket, d.used if d.bucket else 0)

    def bucket_freed(self, bucket: int) -> None:
        # A bucket still open in a write point keeps being filled (never over
        # its earlier slots); it joins `freed` when the write point moves on.
        if bucket in self.open:
            self.freed_while_open.add(bucket)
        else:
            self.freed.add(bucket)

    def bucket_used(self, bucket: int) -> None:
        """A transaction marked `bucket` used in its alloc key."""
        self.unmarked.discard(bucket)

    def on_commit(self) -> list[int]:
        """Buckets freed before a commit may be reused now; those still free are
        returned for discarding."""
        freed, self.freed = sorted(self.freed), set()
        btrees = self.store.btrees
        return [b for b in freed
                if decode_alloc(btrees.get(BtreeId.alloc, alloc_pos(b))).data_type == DataType.free]

    def free_buckets(self) -> int:
        """Buckets available for allocation now (accounting minus the unusable)."""
        used = sum(read_counters(self.store.btrees, AccountingType.data_type, t)[0]
                   for t in DataType if t != DataType.free)
        # `used` counts the superblock buckets too, so count from bucket 0
        return max(0, self.sb.nbuckets - used - len(self.freed) - len(self.unmarked))

    # ------------------------------------------------------------------ buckets

    def _find_free_bucket(self) -> tuple[int, int]:
        """(bucket, its current gen) of a free bucket not open and not just freed."""
        btrees = self.store.btrees
        for start in (self.cursor, self.sb.first_bucket):
            for lo, hi in freespace.free_ranges(btrees, start):
                for b in range(max(lo, start), hi):
                    if (b in self.open or b in self.unmarked or b in self.freed
                            or b in self.protected):
                        continue
                    a = decode_alloc(btrees.get(BtreeId.alloc, alloc_pos(b)))
                    if a.data_type != DataType.free:
                        continue  # index disagrees with the alloc key: leave it to check
                    self.cursor = b + 1
                    return b, a.gen
        raise NoSpaceError(f"{self.store.dev.name}: no space left on the image")

    def _open_bucket(self, kind: str, *, reserve: bool) -> WritePoint:
        if reserve and self.free_buckets() <= self.reserve:
            raise NoSpaceError(f"{self.store.dev.name}: no space left on the image")
        b, gen = self._find_free_bucket()
        wp = WritePoint(b, (gen + 1) & 0xFF, 0)
        self.open.add(b)
        self.unmarked.add(b)
        old = self.wps[kind]
        if old.bucket:
            self.open.discard(old.bucket)
            if old.bucket in self.freed_while_open:
                self.freed_while_open.discard(old.bucket)
                self.freed.add(old.bucket)
        self.wps[kind] = wp
        return wp

    def allocate_node(self, btree_id: int) -> tuple[int, int]:
        wp = self.wps["btree"]
        if not wp.bucket or wp.used + self.node_size > self.bucket_size:
            wp = self._open_bucket("btree", reserve=False)
        sector = (wp.bucket * self.bucket_size + wp.used) // SECTOR
        wp.used += self.node_size
        return sector, wp.gen

    def allocate_data(self, nbytes: int) -> tuple[int, int, int]:
        """Space for up to `nbytes` of data, contiguous in one bucket.

        Returns (device sector, gen, bytes granted); the grant may be smaller
        than asked (the rest of the bucket) but is never zero."""
        wp = self.wps["user"]
        if not wp.bucket or wp.used >= self.bucket_size:
            wp = self._open_bucket("user", reserve=True)
        grant = min(nbytes, self.bucket_size - wp.used)
        sector = (wp.bucket * self.bucket_size + wp.used) // SECTOR
        wp.used += grant
        return sector, wp.gen, grant

    def release_data(self, sector: int, nbytes: int) -> None:
        """Give back the tail of the last grant (when fewer bytes were written)."""
        wp = self.wps["user"]
        end = sector * SECTOR + nbytes
        if wp.bucket and end == wp.bucket * self.bucket_size + wp.used:
            wp.used -= nbytes

    # ------------------------------------------------------------------ NodeSpace

    def apply_moves(self, moves) -> None:
        node_moves_transaction(self.store, moves)
