"""Sharing file ranges (reflink): the engine of `bfs reflink` and `bfs cp`.

bcachefs's bch2_remap_range, on the filesystem layer:

 1. every piece of the source range that is a plain extent or inline data
    becomes an indirect key at the end of the reflink index space (`reflink_v`
    with the extent value, or `indirect_inline_data` with the bytes; refcount
    0 — the reflink_p triggers raise it), and the source range is rewritten
    *in the source's own snapshot* as `reflink_p` keys pointing at it
    (replace_range: a key an ancestor snapshot owns is left alone — other
    snapshots keep seeing it — and the new reflink_p shadows it at the
    source's snapshot; a read-only source is not rewritten at all: the
    indirect key then refers to the data directly, beside the source extent);
 2. a piece that already is a `reflink_p` is simply referenced again;
 3. the destination range is replaced (in the destination's snapshot) by
    `reflink_p` keys for the same indexes. Holes stay holes on both sides.

Refcounts are the reflink_p trigger's business (bfs_tools/reflink.py): each
reflink_p adds one reference to every indirect key its padded range touches.
A reflink_p created here is padded (front_pad/back_pad) so that it covers the
indirect keys at its edges whole, as bcachefs does, so later splits never leak
or lose references. Everything happens in the caller's transaction: one
transaction per command, all or nothing.

A tree copy (`cp -r`, Copier) gathers its new inodes, dirents and whole-file
clones in a BulkKeys and queues them at once with their trigger effects summed
(refcounts, accounting) instead of one trigger call per key: the same keys and
counters, in the same single transaction.

    with Filesystem.open("disk.img", write=True) as fs:
        t = fs.store.transaction()
        Remapper(fs, t).remap(src, src_inode, 0, dst, dst_inode, 0, src_inode.size)
        t.commit()
"""

from __future__ import annotations

import os
import random
import stat
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from functools import partial
from operator import attrgetter

from .alloc.accounting import acct_pos
from .codec import field_spans, field_unpacker
from .errors import (
    BfsError,
    CorruptionError,
    CrossDeviceError,
    ExistsError,
    IsADirError,
    NoSpaceError,
    NotFoundError,
)
from .extents import cut
from .formats.constants import REFLINK_IDX_MAX, REFLINK_REFCOUNT_MAX, U32_MAX, U64_MAX
from .formats.ids import AccountingType, BtreeId, DirentType, KeyType
from .fs.data import (
    END_OF_FILE,
    SECTOR,
    DataWriter,
    ReadContext,
    data_keys,
    inline_key,
    key_data,
    read_range,
    visible_extents,
)
from .fs.dirent import DirentHead
from .fs.extent_update import replace_range
from .fs.filesystem import DTYPES, Where, now
from .fs.inode import Inode, InodeValue
from .fs.populate import NewDir, new_xattr
from .fs.xattr import decode_xattr
from .keys import Key, Pos, encode_key, filter_visible, pack_key_header
from .reflink import (
    ReflinkP,
    ReflinkPValue,
    add_counted_references,
    decode_reflink_p,
    overlapping,
    padded_range,
    reflink_p_key,
)

E, R = BtreeId.extents, BtreeId.reflink
_ZERO_REFS = bytes(8)
# a new indirect key of the bulk path: referenced by the source and by the copy
_TWO_REFS = (2).to_bytes(8, "little")
# the indirect key type a directly stored data key becomes
_DIRECT = {KeyType.extent: int(KeyType.reflink_v),
           KeyType.inline_data: int(KeyType.indirect_inline_data)}
_pack_p = ReflinkPValue.STRUCT.pack
_pack_dirent_head = DirentHead.STRUCT.pack     # the name follows (fs/dirent.py Dirent.pack)
_DT_UNKNOWN = DirentType.unknown
_unpack_inode = InodeValue.unpack
_pack_inode = InodeValue.STRUCT.pack
# what the tree copy reads of every source inode: the rest only off the bulk path
_inode_head = field_unpacker("InodeValue", "mode", "nlink", "size")
_INODE_SIZE = InodeValue.SIZE
# A whole clone's inode value (the bulk path) in one pack: the source's bytes
# for what cp -a keeps (mode, owner, size, atime, mtime, rdev), the copy's own
# values for the rest, as _copy_fields sets them (flags, generation, subvol 0;
# nlink 1; its sectors; ctime and btime now; its hash seed, the filesystem's
# hash and checksum types; its dirent). Half the time of unpacking and packing
# the 24 fields; tests/cli/test_cp_reads.py proves the two the same.
_IV = field_spans("InodeValue")
_MODE, _IDS, _SIZE = slice(*_IV["mode"]), slice(_IV["uid"][0], _IV["gid"][1]), slice(*_IV["size"])
_AM_TIMES = slice(_IV["atime_sec"][0], _IV["mtime_nsec"][1])
_RDEV = slice(*_IV["rdev"])
_pack_clone_value = struct.Struct("<4s4x8sL4x8sQ24s24s8sQBB2x4xQQ").pack
_pack_times = struct.Struct("<qLqL").pack       # ctime, btime (the copy's)
_S_IFMT = 0o170000      # the file type bits of a mode (stat.S_IFMT)
_S_IFREG, _S_IFDIR, _S_IFLNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_REFLINK_P = int(KeyType.reflink_p)
_INODE = int(KeyType.inode)
_DIRENT = int(KeyType.dirent)
# key types up to this one are deleted keys and whiteouts (keys.filter_visible)
_WHITEOUTS = KeyType.hash_whiteout

# A reflink_p made here covers at most this many sectors (whole indirect keys):
# reads of part of a file read whole keys, so keys stay moderately sized.
P_MAX_SECTORS = 2048
# Transactions with more key bytes than this are committed without the journal.
BULK_BYTES = 64 << 10


class RemapError(BfsError):
    """A clone request that cannot be done (bad range, wrong file type, ...)."""


class CannotShareError(RemapError):
    """The data exists but cannot be shared (refcount or index space exhausted,
    lost data): `cp --reflink=auto` falls back to copying."""


class IndexSpaceError(CannotShareError, NoSpaceError):
    """No room left in the 56-bit reflink index space."""


class Segment:
    """A piece [start, end) of the source range (file sectors) and the reflink
    index of its first sector. `new`: an indirect key made for it by this remap.
    pieces (existing ones): [(start, end, front_pad, back_pad)] per reflink_p.
    A plain class, not a dataclass: importing dataclasses costs `cp` ~14 ms."""

    __slots__ = ("start", "end", "idx", "new", "pieces")

    def __init__(self, start: int, end: int, idx: int, new: bool):
        self.start = start
        self.end = end
        self.idx = idx
        self.new = new
        self.pieces: list | None = None


class BulkKeys:
    """The keys of a tree copy (`cp -r` into a new directory), gathered to be
    queued at once with Transaction.update_appended (the new keys, encoded)
    and update_accounted (the sources' converted extents), and the effects their
    triggers would have, summed as they are gathered. Equivalent to queueing
    each key and running its triggers, which for the standard library (7,700
    files, 40,000 keys) took ~0.17 s of Python calls to sum a few counters:

      * new inodes: nr_inodes + 1 each (fs/inode.py _inode_trigger);
      * dirents: no trigger;
      * a source extent turned into a reflink_p, and the new reflink_v holding
        its value: the bucket loses the extent's sectors and gains the
        reflink_v's, the same sectors of the same bucket (no alloc key
        changes); its snapshot's counter loses them, the reflink counter of
        indirect sectors gains them (alloc/triggers.py data_trigger); inline
        data has no data trigger on either side;
      * every new reflink_p: the reflink counter of referenced sectors gains
        its size, and each indirect key its padded range covers one reference
        (reflink.py reflink_p_trigger): a new indirect key is written with its
        final refcount, 2 (the source's reflink_p and the copy's), an existing
        one (a copy of a copy) gets its counted references in `counted`.

    Only whole-file clones into new files (Remapper.clone_new) and the new
    inodes and dirents of new directories go here; everything else (the
    parent directory, xattrs, symlinks, copied data, ranges of ancestor
    snapshots, read-only sources) is queued as usual, with its triggers."""

    __slots__ = ("extents", "indirect", "inodes", "dirents", "converted", "unshared",
                 "indirect_sectors", "referenced", "counted")

    def __init__(self):
        # the copy's new keys, encoded (keys.encode_key's form), for
        # Transaction.update_appended: they come after every key of their
        # btrees, so they are written as new leaves without becoming Key objects
        self.extents: list[bytes] = []      # the copies' reflink_p keys, in order
        self.indirect: list[bytes] = []     # the new reflink_v keys, in order
        self.inodes: dict[int, bytes] = {}  # inode number -> its inode key
        self.dirents: dict[int, dict[int, bytes]] = {}  # directory -> slot -> dirent key
        # the sources' reflink_p keys (in place of their extents: Key objects,
        # merged among the btree's keys), in runs of ascending positions
        self.converted: list[Key] = []
        self.unshared: dict[int, int] = {}   # snapshot -> extent sectors now indirect
        self.indirect_sectors = 0   # sectors of the new reflink_v keys
        self.referenced = 0     # sectors the new reflink_p keys map
        self.counted: dict[Pos, list] = {}   # existing indirect key -> [key, references]

    def shared(self, snapshot: int, extent_sectors: int, referenced: int) -> None:
        """A file's clone: `extent_sectors` of its snapshot's extents became
        indirect; the new reflink_p keys map `referenced` sectors."""
        if extent_sectors:
            self.unshared[snapshot] = self.unshared.get(snapshot, 0) + extent_sectors
            self.indirect_sectors += extent_sectors
        self.referenced += referenced

    def queue(self, trans) -> None:
        """Queue every key and add the summed trigger effects."""
        if self.converted:
            trans.update_accounted(E, self.converted)
        trans.update_appended(E, self.extents)
        trans.update_appended(R, self.indirect)
        inodes = self.inodes
        trans.update_appended(BtreeId.inodes, list(map(inodes.__getitem__, sorted(inodes))))
        trans.update_appended(BtreeId.dirents, [
            entries[slot] for _dir, entries in sorted(self.dirents.items())
            for slot in sorted(entries)])
        if inodes:
            trans.acct(acct_pos(AccountingType.nr_inodes), [len(inodes)])
        for snapshot, sectors in self.unshared.items():
            trans.acct(acct_pos(AccountingType.snapshot, snapshot), [-sectors])
        if self.indirect_sectors or self.referenced:
            # reflink counters: indirect sectors, referenced sectors
            trans.acct(acct_pos(AccountingType.reflink), [self.indirect_sectors,
                                                          self.referenced])
        if self.counted:
            add_counted_references(trans, self.counted)


def _encoding_into(encoded: list[bytes]):
    """key -> append its encoding to `encoded`."""
    append = encoded.append
    return lambda key: append(encode_key(key))


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


class Remapper:
    """Shares ranges between files, inside one transaction."""

    def __init__(self, fs, trans):
        self.fs = fs
        self.trans = trans
        self.block = fs.store.sb.block_size
        self._next_idx: int | None = None
        self._added: dict[tuple, int] = {}    # indirect key pos -> references added here
        self._indirect: dict[tuple, list] = {}  # padded range -> indirect keys (prefetch_indirect)
        self._read_only: dict[int, bool] = {}

    # ------------------------------------------------------------ checks

    def check_request(self, src, src_inode, src_off: int, dst, dst_inode, dst_off: int,
                      length: int, *, what: str = "", to_eof: bool = False) -> int:
        """Validate a clone request like FICLONERANGE; returns the length (0 = to EOF).
        to_eof: the destination ends with the range (what follows it is dropped)."""
        for ino, label in ((src_inode, "source"), (dst_inode, "destination")):
            if ino.is_dir:
                raise IsADirError(f"{what}{label} is a directory")
            if not ino.is_reg:
                raise RemapError(f"{what}{label} is not a regular file")
        if src_off < 0 or dst_off < 0 or length < 0:
            raise RemapError(f"{what}negative offset or length")
        if src_off % self.block or dst_off % self.block:
            raise RemapError(f"{what}offsets must be multiples of the block size "
                             f"({self.block} bytes)")
        if src_off > src_inode.size:
            raise RemapError(f"{what}source offset {src_off} is beyond the end of the source "
                             f"({src_inode.size} bytes)")
        if length == 0:
            length = src_inode.size - src_off
        if src_off + length > src_inode.size:
            raise RemapError(f"{what}source range {src_off}+{length} goes beyond the end of the "
                             f"source ({src_inode.size} bytes)")
        if dst_off + length > (1 << 63) - 1:
            raise RemapError(f"{what}destination range too large")
        if length % self.block:
            # only a tail that ends at the source's EOF may be unaligned; its last
            # block is shared whole, so it must not land inside the destination
            if src_off + length != src_inode.size:
                raise RemapError(f"{what}length must be a multiple of the block size "
                                 f"({self.block} bytes) unless the range ends at the source's "
                                 "end of file")
            if dst_off + length < dst_inode.size and not to_eof:
                raise RemapError(f"{what}the unaligned last block of the source cannot be "
                                 "cloned into the middle of the destination (it would "
                                 "overwrite data after the range)")
        if (src.subvol, src.inum) == (dst.subvol, dst.inum):
            blen = _round_up(length, self.block)
            if src_off < dst_off + blen and dst_off < src_off + blen:
                raise RemapError(f"{what}source and destination ranges overlap in the same file")
        return length

    # ------------------------------------------------------------ index space

    def _alloc_idx(self, n: int) -> int:
        if self._next_idx is None:
            last = self.trans.peek_prev(R, (0, U64_MAX, U32_MAX))
            self._next_idx = last.pos[1] if last is not None else 0
        idx = self._next_idx
        if idx + n > REFLINK_IDX_MAX:
            raise IndexSpaceError("the reflink index space is exhausted; nothing was changed")
        self._next_idx = idx + n
        return idx

    # ------------------------------------------------------------ sharing

    def share(self, src, src_inode, start: int, end: int, data=None) -> list[Segment]:
        """Make the source's sectors [start, end) indirect; returns its segments
        (holes have none). The source keeps reading the same bytes. data: the
        keys the source's snapshot sees over [start, end), if the caller read
        them already (in order; keys outside the range are skipped)."""
        t = self.trans
        fs = self.fs
        visible = fs.visible(src.snapshot)
        if data is None:
            data = visible_extents(t, src.inum, visible, start, end)
        keys = []
        need = 0
        has_p = False
        for k in data:
            ke = k.pos[1]
            ks = ke - k.size
            if ke <= start or ks >= end:
                continue
            if k.type == KeyType.error:
                raise CannotShareError(f"data at byte {ks * SECTOR} of the source was lost; "
                                       "it cannot be shared")
            keys.append(k)
            if k.type == KeyType.reflink_p:
                has_p = True
            else:
                need += min(ke, end) - max(ks, start)
        # pieces of existing reflink_p, merged where contiguous in the file and in
        # the index space; refuse (refcount overflow, no index space) before
        # anything is written
        old: list[Segment] = []
        for k in keys if has_p else ():
            if k.type == KeyType.reflink_p:
                s, e = max(k.start, start), min(k.end, end)
                i = decode_reflink_p(k.val).idx + s - k.start
                if old and old[-1].end == s and old[-1].idx + s - old[-1].start == i:
                    old[-1].end = e
                else:
                    old.append(Segment(s, e, i, False))
        for seg in old:
            self._reference(seg)
        idx = self._alloc_idx(need) if need else 0
        segs: list[Segment] = []
        converted: list[tuple[Key, Segment]] = []
        # every converted key lies inside [start, end) and is the source
        # snapshot's own: each can become a reflink_p in place
        in_place = True
        snap = src.snapshot
        j = 0
        for k in keys:
            ke = k.pos[1]
            ks = ke - k.size
            s, e = max(ks, start), min(ke, end)
            if k.type == KeyType.reflink_p:
                while old[j].end <= s:
                    j += 1
                if not segs or segs[-1] is not old[j]:
                    segs.append(old[j])
            elif k.type in (KeyType.extent, KeyType.inline_data):
                if s == ks and e == ke:
                    piece = k
                    if k.pos[2] != snap:
                        in_place = False
                else:
                    piece, in_place = cut(k, s, e), False
                vtype = KeyType.reflink_v if k.type == KeyType.extent else \
                    KeyType.indirect_inline_data
                # fresh indexes (past every indirect key): update_new
                t.update_new(R, Key((0, idx + e - s, 0), vtype, _ZERO_REFS + piece.val,
                                    size=e - s))
                seg = Segment(s, e, idx, True)
                segs.append(seg)
                converted.append((k, seg))
                idx += e - s
        if converted and not self._read_only_subvol(src.subvol):
            self._convert_source(src, visible, segs, converted, in_place)
        return segs

    def _read_only_subvol(self, subvol: int) -> bool:
        ro = self._read_only.get(subvol)
        if ro is None:
            ro = self._read_only[subvol] = self.fs.subvolume(subvol, self.trans).read_only
        return ro

    def _convert_source(self, src, visible, segs: list[Segment],
                        converted: list[tuple[Key, Segment]], in_place: bool) -> None:
        """Rewrite the new segments of the source as reflink_p at its snapshot.
        in_place: every converted key is whole and of the source's snapshot."""
        t = self.trans
        snap = src.snapshot
        if in_place:
            # the keys are the source snapshot's own: each becomes, in place, a
            # reflink_p over exactly its range (a key of the source's snapshot
            # coincides with any ancestor key it hides, so the snapshot
            # invariant of the extents btree holds; the snapshot is a leaf)
            for k, seg in converted:
                t.update(E, reflink_p_key(k.pos, k.size, ReflinkP(seg.idx, 0, 0)))
            return
        # keys of ancestor snapshots, or cut: replace_range writes the reflink_p at
        # the source's snapshot, cut where ancestor keys begin and end, and leaves
        # the ancestors' keys (which other snapshots see) as they are
        delta = 0
        for run in _runs([s for s in segs if s.new]):
            pkeys = self._p_keys(src.inum, snap, run, 0)
            delta += replace_range(t, src.inum, snap, run[0].start, run[-1].end, pkeys, visible)
        if delta:   # extent and reflink_p sectors count alike: should not happen
            ino = self.fs.inode(src, t)
            ino.sectors += delta
            self.fs.put_inode(t, src, ino)

    # ------------------------------------------------------------ reflink_p keys

    def _p_keys(self, inum: int, snap: int, run: list[Segment], shift: int) -> list[Key]:
        """reflink_p keys mapping the file-and-index-contiguous segments `run` at
        file sectors shifted by `shift`, cut at indirect key boundaries."""
        out = []
        if run[0].new:
            # our own indirect keys: one per segment; group whole keys, no pads
            i = 0
            while i < len(run):
                j = i
                size = run[i].end - run[i].start
                while j + 1 < len(run) and size + run[j + 1].end - run[j + 1].start <= P_MAX_SECTORS:
                    j += 1
                    size += run[j].end - run[j].start
                a, b = run[i].start + shift, run[j].end + shift
                out.append(reflink_p_key((inum, b, snap), b - a, ReflinkP(run[i].idx, 0, 0)))
                i = j + 1
            return out
        for seg in run:
            for a, b, front, back in seg.pieces:
                out.append(reflink_p_key((inum, b + shift, snap), b - a,
                                         ReflinkP(seg.idx + a - seg.start, front, back)))
        return out

    def _reference(self, seg: Segment) -> Segment:
        """Plan the reflink_p pieces for a piece of an existing reflink_p: each
        padded to cover the indirect keys at its edges whole. Counts the
        references they add; refuses when a refcount would overflow or the
        indexes are not all there."""
        seg.pieces = []
        a = seg.start
        while a < seg.end:
            b = min(seg.end, a + P_MAX_SECTORS)
            lo = seg.idx + a - seg.start
            hi = lo + b - a
            vs = self._add_references(lo, hi)
            seg.pieces.append((a, b, max(0, lo - vs[0].start), max(0, vs[-1].end - hi)))
            a = b
        return seg

    # ------------------------------------------------------------ remap

    def place(self, dst, segs: list[Segment], shift: int, start: int, end: int, *,
              fresh: bool = False) -> int:
        """Make the destination's sectors [start, end) map `segs` (shifted by
        `shift` sectors); gaps become holes. Returns the change of its sectors.
        fresh: the destination has no data keys yet (a file created in this
        transaction)."""
        pkeys = []
        for run in _runs(segs):
            pkeys += self._p_keys(dst.inum, dst.snapshot, run, shift)
        t = self.trans
        if fresh:
            for pk in pkeys:
                t.update_new(E, pk)
            return sum(pk.size for pk in pkeys)
        return replace_range(t, dst.inum, dst.snapshot, start, end, pkeys,
                             self.fs.visible(dst.snapshot))

    def remap(self, src, src_inode, src_off: int, dst, dst_inode, dst_off: int, length: int,
              *, what: str = "", to_eof: bool = False, fresh: bool = False,
              dst_checked: bool = False, data=None) -> int:
        """Share bytes [src_off, src_off + length) of src at dst_off of dst (length 0:
        to the source's EOF). Updates dst_inode (size, sectors, times; the caller
        puts it). to_eof: the destination ends with the range (data after it goes).
        Returns the length shared. dst_checked: the caller made sure dst is writable.
        data: the source's visible data keys, if already read (see share)."""
        if not dst_checked:
            self.fs.check_writable(dst, self.trans)
        length = self.check_request(src, src_inode, src_off, dst, dst_inode, dst_off, length,
                                    what=what, to_eof=to_eof)
        if length == 0 and not to_eof:
            return 0                    # nothing to share (the source range is empty)
        blen = _round_up(length, self.block)
        a, b = src_off // SECTOR, (src_off + blen) // SECTOR
        d = dst_off // SECTOR
        if length:
            segs = self.share(src, src_inode, a, b, data)
            end = END_OF_FILE if to_eof else d + (b - a)
            dst_inode.sectors += self.place(dst, segs, d - a, d, end, fresh=fresh)
        elif to_eof and not fresh:
            dst_inode.sectors += replace_range(self.trans, dst.inum, dst.snapshot, d, END_OF_FILE,
                                               [], self.fs.visible(dst.snapshot))
        dst_inode.size = dst_off + length if to_eof else max(dst_inode.size, dst_off + length)
        dst_inode.mtime_sec, dst_inode.mtime_nsec = dst_inode.ctime_sec, dst_inode.ctime_nsec = now()
        return length

    def clone_new(self, src, size: int, dst, data, bulk: BulkKeys | None = None) -> int | None:
        """Share all of src with dst, a regular file created in this transaction
        (no data keys yet): `cp`'s common case, key by key, without the range
        machinery of share() and place(). A source extent or inline_data key
        becomes an indirect key (refcount 0: the reflink_p triggers count) and,
        in place, a reflink_p to it; dst gets reflink_p keys over the same
        indexes, grouped up to P_MAX_SECTORS, as remap() makes them. A source
        reflink_p (already shared: a copy of a copy) is referenced once more:
        dst gets the same pointer, pads and all, and the refcounts of the
        indirect keys it covers go up by one.

        Only when every data key (`data`: the source's visible keys, in order)
        lies inside the source's `size` (bytes) and is a reflink_p or a whole
        extent or inline_data key of the source's own snapshot; else returns
        None having done nothing, for remap(). Raises, with nothing queued,
        where remap() would (missing indexes, refcount overflow). Returns the
        sectors dst now maps: the caller sets dst's size and sectors (not its
        times). The caller checked the request (both regular files, dst
        writable).

        bulk: gather the keys there, with their trigger effects summed (a tree
        copy's bulk path), instead of queueing them; a source whose data stays
        in place (a read-only subvolume) then takes the queueing way."""
        end = _round_up(size, self.block) // SECTOR
        snap = src.snapshot
        if bulk is not None and len(data) == 1:
            # one extent or inline key: most files of a tree (the loop below,
            # unrolled: a tenth of a tree copy's time went to it)
            k = data[0]
            vtype = _DIRECT.get(k.type)
            n = k.size
            if vtype is not None and k.pos[2] == snap and k.pos[1] <= end and \
                    not self._read_only_subvol(src.subvol):
                idx = self._alloc_idx(n)
                p = _pack_p(idx, 0, 0)
                val = _TWO_REFS + k.val
                bulk.indirect.append(pack_key_header(len(val), vtype, 0, n, 0, 0, idx + n, 0)
                                     + val)
                bulk.converted.append(Key(k.pos, _REFLINK_P, p, n))
                bulk.extents.append(pack_key_header(len(p), _REFLINK_P, 0, n, 0, dst.inum,
                                                    k.pos[1], dst.snapshot) + p)
                bulk.shared(snap, n if k.type == KeyType.extent else 0, 2 * n)
                return n
        need = 0
        pointers = []
        for k in data:
            if k.pos[1] > end:
                return None
            if k.type == KeyType.reflink_p:
                pointers.append(k)
            elif k.type in _DIRECT and k.pos[2] == snap:
                need += k.size
            else:
                return None
        convert = need and not self._read_only_subvol(src.subvol)
        if need and not convert:
            bulk = None
        if pointers:
            self._reference_pointers(pointers, bulk.counted if bulk is not None else None)
        t = self.trans
        idx = self._alloc_idx(need) if need else 0
        if bulk is None:
            put_e, put_r, put_src, refs = (partial(t.update_new, E), partial(t.update_new, R),
                                           partial(t.update, E), _ZERO_REFS)
        else:
            put_e, put_src = _encoding_into(bulk.extents), bulk.converted.append
            put_r, refs = _encoding_into(bulk.indirect), _TWO_REFS
        inum, dsnap = dst.inum, dst.snapshot
        sectors = 0
        extent_sectors = 0
        g_start = g_end = g_idx = -1        # the destination reflink_p being grown
        for k in data:
            size = k.size
            sectors += size
            start = k.pos[1] - size
            if k.type == KeyType.reflink_p or not (start == g_end and
                                                   g_end - g_start + size <= P_MAX_SECTORS):
                if g_end >= 0:
                    put_e(Key((inum, g_end, dsnap), KeyType.reflink_p, _pack_p(g_idx, 0, 0),
                              size=g_end - g_start))
                    g_end = -1
                if k.type == KeyType.reflink_p:
                    put_e(Key((inum, k.pos[1], dsnap), KeyType.reflink_p, k.val, size=size))
                    continue
                g_start, g_end, g_idx = start, start + size, idx
            else:
                g_end += size   # contiguous in the file, so in the index space too
            if k.type == KeyType.extent:
                extent_sectors += size
            put_r(Key((0, idx + size, 0), _DIRECT[k.type], refs + k.val, size=size))
            if convert:
                put_src(Key(k.pos, KeyType.reflink_p, _pack_p(idx, 0, 0), size=size))
            idx += size
        if g_end >= 0:
            put_e(Key((inum, g_end, dsnap), KeyType.reflink_p, _pack_p(g_idx, 0, 0),
                      size=g_end - g_start))
        if bulk is not None:
            bulk.shared(snap, extent_sectors, need + sectors)
        return sectors

    def prefetch_indirect(self, pointers) -> None:
        """Read the indirect keys the reflink_p keys `pointers` cover (their
        padded ranges), for _reference_pointers: ranges that overlap or touch
        (a copy of a copy: consecutive indexes) in one walk. Only before
        anything is queued in the reflink btree; its existing keys do not change
        before the commit (a remap adds keys at fresh indexes only)."""
        spans = sorted({padded_range(k) for k in pointers})
        i = 0
        while i < len(spans):
            j, top = i + 1, spans[i][1]
            while j < len(spans) and spans[j][0] <= top:
                top = max(top, spans[j][1])
                j += 1
            keys = list(overlapping(self.trans, spans[i][0], top))
            # indirect keys never overlap: ends and starts both ascend
            ends = [v.pos[1] for v in keys]
            starts = [v.pos[1] - v.size for v in keys]
            for lo, hi in spans[i:j]:
                self._indirect[lo, hi] = keys[bisect_right(ends, lo):bisect_left(starts, hi)]
            i = j

    def _reference_pointers(self, pointers: list[Key], counted: dict | None = None) -> None:
        """Count one more reference from a copy of each reflink_p in `pointers`
        to every indirect key its padded range covers (as prefetch_indirect read
        them, or read here). counted: also count them there ({pos: [indirect
        key, references]}, BulkKeys.counted), all or none (a refusal raises
        before any is)."""
        covered = []
        for k in pointers:
            idx, front, back = ReflinkPValue.unpack(k.val)
            lo, hi = idx - front, idx + k.size + back
            keys = self._indirect.get((lo, hi))
            if keys is None:
                keys = list(overlapping(self.trans, lo, hi))
            covered.append(self._add_references(idx, idx + k.size, keys))
        if counted is not None:
            for vs in covered:
                for v in vs:
                    c = counted.get(v.pos)
                    if c is None:
                        counted[v.pos] = [v, 1]
                    else:
                        c[1] += 1

    def _add_references(self, lo: int, hi: int, keys: list[Key] | None = None) -> list[Key]:
        """The indirect keys over indexes [lo, hi) (or `keys`, when the caller read
        them: a reflink_p's padded range, which it references whole), each counted as referenced once more in
        self._added. Refuses when they do not cover [lo, hi) whole or when a
        refcount would overflow; the command then changes nothing (counts made
        before a refusal stay, which only makes later checks stricter)."""
        vs = list(overlapping(self.trans, lo, hi)) if keys is None else keys
        at = lo
        for v in vs:
            if v.start > at:
                break
            at = max(at, v.end)
        if not vs or at < hi:
            raise CorruptionError(f"reflink indexes [{lo}, {hi}) are missing: the source "
                                  "refers to shared data that does not exist; run bfs check")
        for v in vs:
            n = self._added.get(v.pos, 0) + 1
            if int.from_bytes(v.val[:8], "little") + n > REFLINK_REFCOUNT_MAX:
                raise CannotShareError(f"reflink index {v.start}: refcount would exceed "
                                       f"{REFLINK_REFCOUNT_MAX}; nothing was changed")
            self._added[v.pos] = n
        return vs

def commit(trans) -> None:
    """Commit a remap/copy transaction. A large one goes to the btree nodes
    without the journal (still atomic: the nodes are written before the commit
    point, Transaction.commit(journal=False)), so its keys are written once, not
    twice: sharing a 1 GiB file writes about half a MiB."""
    trans.commit(journal=False if trans.queued_bytes_over(BULK_BYTES) else None)


def _runs(segs: list[Segment]) -> list[list[Segment]]:
    """Group segments into runs contiguous in the file and in the index space and
    of one kind (new indirect keys, or pieces of existing reflink_p)."""
    runs: list[list[Segment]] = []
    for s in segs:
        if runs:
            prev = runs[-1][-1]
            if (s.new and prev.new and s.start == prev.end
                    and s.idx == prev.idx + prev.end - prev.start):
                runs[-1].append(s)
                continue
        runs.append([s])
    return runs


# ---------------------------------------------------------------------- plain copies


def copy_data(fs, trans, writer: DataWriter, src, src_inode, dst, dst_inode, *,
              what: str = "", fresh: bool = False, data=None) -> None:
    """Give dst a private copy of src's contents (cp --reflink=never): new data
    written for every data range, holes kept. Sets dst size and sectors.
    data: src's visible data keys as committed, if the caller read them already.

    src is read as committed: a copy never changes the keys of a file it copies
    this way (only shared files are rewritten, and a share that fails does so
    before writing anything), and a read through the transaction would merge
    in the thousands of keys a tree copy has queued, for every file."""
    visible = fs.visible(src.snapshot)
    inum, snap = dst.inum, dst.snapshot
    size = src_inode.size
    end = _round_up(size, SECTOR) // SECTOR
    if data is None:
        data = visible_extents(fs.btrees, src.inum, visible, 0, end)
    if size <= fs.inline_max:
        content = read_range(fs.store, src.inum, visible, 0, size, what, keys=data)
        keys = [inline_key(inum, snap, content)] if content else []
    else:
        ctx = ReadContext(fs.store, what)
        keys = []
        # one write per file: gathering several files' data per write saved no
        # time here and held more memory
        writer.flush()
        for k in data:
            if k.start >= end:
                break
            keys += data_keys(inum, snap, k.start, writer.write(key_data(ctx, k)))
    dst_inode.size = size
    if fresh:
        for k in keys:
            trans.update_new(E, k)
        dst_inode.sectors = sum(k.size for k in keys)
    else:
        dst_inode.sectors += replace_range(trans, inum, snap, 0, END_OF_FILE, keys,
                                           fs.visible(snap))


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def reflink_paths(fs, src_path: str, dst_path: str, *, src_offset: int = 0, dst_offset: int = 0,
                  length: int = 0, dst_fs=None) -> int:
    """`bfs reflink`: share SRC's bytes [src_offset, +length) (length 0: to its EOF)
    at dst_offset of DST, in one transaction. Without offsets and length the
    whole file is shared and DST becomes an exact copy (created if missing, with
    SRC's permissions less the umask, like cp). Returns the bytes shared.
    dst_fs: the destination's filesystem, which must be fs (one image)."""
    if dst_fs is not None and dst_fs is not fs and dst_fs.store is not fs.store:
        raise CrossDeviceError("cannot share data between two images")
    whole = src_offset == 0 and dst_offset == 0 and length == 0
    t = fs.store.transaction()
    src = fs.resolve(src_path, follow=True, src=t)
    if src.inode.is_dir:
        raise IsADirError(f"{src.path}: is a directory")
    try:
        dst = fs.resolve(dst_path, follow=True, src=t)
    except NotFoundError:
        dst = None
    if dst is not None:
        if dst.inode.is_dir:
            raise IsADirError(f"{dst.path}: is a directory")
        dst_where, dst_inode, fresh = dst.where, dst.inode, False
    else:
        parent, name = fs.resolve_parent(dst_path, src=t)
        if not src.inode.is_reg:
            raise RemapError(f"{src.path}: not a regular file")
        fs.check_writable(parent.where, t)
        dst_where = fs.create(parent.where, name,
                              stat.S_IFREG | (stat.S_IMODE(src.inode.mode) & ~_umask()), trans=t)
        dst_inode, fresh = fs.inode(dst_where, t), True
    n = Remapper(fs, t).remap(src.where, src.inode, src_offset, dst_where, dst_inode, dst_offset,
                              length, what=f"{src_path} -> {dst_path}: ", to_eof=whole,
                              fresh=fresh)
    fs.put_inode(t, dst_where, dst_inode)
    commit(t)
    return n


# ---------------------------------------------------------------------- cp


class CopyReport:
    """What a copy did (a plain class: see Segment)."""

    __slots__ = ("files", "dirs", "symlinks", "special", "hardlinks", "bytes", "cloned_bytes",
                 "copied_bytes", "xattrs")

    def __init__(self):
        self.files = self.dirs = self.symlinks = self.special = self.hardlinks = 0
        self.bytes = self.cloned_bytes = self.copied_bytes = self.xattrs = 0


class _Src:
    """One object of the tree being copied, read before anything is written: where
    it is, its inode's value (`raw`, its bytes; `mode`, `nlink` and `size` read
    from it; `value`, an InodeValue, and `inode`, an Inode, decoded when first
    asked, as only objects off the bulk path need them), its name, its
    directory (None: the top), the data keys its snapshot sees (regular files),
    its xattrs; then `copy`: the copy's Where. `what`: the copy's path, for
    messages (built when one needs it)."""

    __slots__ = ("where", "raw", "mode", "nlink", "size", "_value", "key_snapshot", "_inode",
                 "name", "parent", "_what", "data", "xattrs", "copy", "newdir")

    def __init__(self, where, name: bytes, parent: _Src | None, inode=None, what: str | None = None):
        self.where = where
        self.name = name
        self.parent = parent
        self._inode = inode
        self._value = None
        if inode is not None:
            self.raw = inode.pack()
            self.mode, self.nlink, self.size = inode.mode, inode.nlink, inode.size
            self.key_snapshot = inode.key_snapshot
        self._what = what
        self.data = None
        self.xattrs = ()
        self.copy = None
        self.newdir = None      # a directory: the NewDir of its copy

    @property
    def value(self):
        v = self._value
        if v is None:
            v = self._value = _unpack_inode(self.raw)
        return v

    @property
    def inode(self) -> Inode:
        ino = self._inode
        if ino is None:
            w = self.where
            ino = self._inode = Inode(w.inum, *self.value, snapshot=w.snapshot,
                                      key_snapshot=self.key_snapshot)
        return ino

    @property
    def what(self) -> str:
        if self._what is None:
            self._what = _child_path(self.parent.what, self.name)
        return self._what


class Copier:
    """`cp -a` inside one image, in one transaction: new inodes with the source's
    mode, owner, atime/mtime and xattrs; symlinks as symlinks; hard links inside
    the copied tree stay hard links; file data shared (reflink "auto"/"always")
    or copied ("never").

    A tree is copied in two passes, as the host import does (fs/populate.py):
    the whole source tree is read first (dirents level by level, then inodes,
    data keys and xattrs, each in btree order), then every key of the copy is
    queued, with the new directories' dirent slots kept in memory (NewDir) and
    every new inode written once, unlooked-up. Reading everything before
    writing also means the copy never sees itself, even when it lands inside
    the tree being copied (in another subvolume)."""

    def __init__(self, fs, trans, reflink: str = "auto", progress=None):
        if reflink not in ("auto", "always", "never"):
            raise ValueError(reflink)
        self.fs = fs
        self.trans = trans
        self.reflink = reflink
        self.progress = progress
        self.remapper = Remapper(fs, trans)
        self.writer = DataWriter(fs.store, fs.store.sb.data_csum_type)
        self.links: dict[tuple[int, int], tuple] = {}   # (subvol, inum) of source -> (Where, Inode)
        self.report = CopyReport()
        self._rng = random.Random(os.urandom(16))       # hash seeds: one urandom call
        # the source tree last read, kept as long as the copier: freeing the
        # standard library's 8,000 objects costs ~6 ms, which a process ending
        # in os._exit need not spend (cli/cp_run.py keeps the copier)
        self.read: list[_Src] = []

    # --------------------------------------------------------------- data

    def file_data(self, src, src_inode, dst, dst_inode, *, fresh: bool, what: str,
                  data=None, bulk: BulkKeys | None = None) -> None:
        """dst's contents become src's (shared or copied), dst's size = src's.
        data: src's visible data keys, if already read. bulk: where a whole-file
        clone gathers its keys (see BulkKeys)."""
        if self.reflink != "never":
            try:
                sectors = None
                if fresh and data is not None:
                    sectors = self.remapper.clone_new(src, src_inode.size, dst, data, bulk)
                if sectors is not None:
                    dst_inode.size = src_inode.size
                    dst_inode.sectors += sectors
                    self.report.cloned_bytes += src_inode.size
                    return
                n = self.remapper.remap(src, src_inode, 0, dst, dst_inode, 0, src_inode.size,
                                        what=f"{what}: ", to_eof=True, fresh=fresh,
                                        dst_checked=True, data=data)
                self.report.cloned_bytes += n
                return
            except CannotShareError:
                if self.reflink == "always":
                    raise
        copy_data(self.fs, self.trans, self.writer, src, src_inode, dst, dst_inode, what=what,
                  fresh=fresh, data=data)
        self.report.copied_bytes += src_inode.size

    def finish(self) -> None:
        self.writer.flush()

    def copy_xattrs(self, src, dst) -> None:
        """src's xattrs onto the existing inode dst."""
        fs = self.fs
        for x in fs.listxattr(src, self.trans):
            fs.setxattr(dst, x.full_name, x.value, trans=self.trans)
            self.report.xattrs += 1

    # --------------------------------------------------------------- trees

    def copy(self, src, src_inode, parent, name: bytes, what: str):
        """Copy src (any type; directories with everything below) into the
        directory `parent` as `name`, which must not exist. Returns its Where."""
        fs, t = self.fs, self.trans
        pdir = NewDir(parent, fs.inode(parent, t), False, "")
        if fs.lookup(parent, pdir.inode, name, t) is not None:
            raise ExistsError(f"{what}: already exists")
        top = _Src(src, name, None, src_inode, what)
        nodes = self.read = self._read_tree(top)
        self._write(nodes, pdir)
        fs._touch_dir(t, parent, pdir.inode)     # (_write counted a directory's link)
        return top.copy

    def copy_children(self, src_dir, dst_dir, dst_inode, what: str) -> None:
        """Copy the entries of src_dir into the existing directory dst_dir (cp -r
        into a directory that already holds the source's name). A name that
        exists on both sides is refused: nothing is changed."""
        fs, t = self.fs, self.trans
        top = _Src(src_dir, b"", None, fs.inode(src_dir, t), what)
        nodes = self.read = self._read_tree(top)
        for n in nodes[1:]:
            if n.parent is top and fs.lookup(dst_dir, dst_inode, n.name, t) is not None:
                raise ExistsError(f"{n.what}: already exists")
        top.copy = dst_dir
        ddir = NewDir(dst_dir, dst_inode, False, "")
        self._write(nodes, ddir, into=top)
        src_inode = top.inode
        dst_inode.atime_sec, dst_inode.atime_nsec = src_inode.atime_sec, src_inode.atime_nsec
        dst_inode.mtime_sec, dst_inode.mtime_nsec = src_inode.mtime_sec, src_inode.mtime_nsec
        fs.put_inode(t, dst_dir, dst_inode)

    def _read_tree(self, top: _Src) -> list[_Src]:
        """top and everything below it, parents before children; each with its
        inode's fields, data keys (regular files) and xattrs. Reads only:
        nothing of the copy is queued yet, so the reads see the tree as it was.
        Dirents, inodes, data keys and xattrs are read in btree order, leaf
        after leaf; keys are unpacked only as far as the copy needs."""
        fs, t = self.fs, self.trans
        views: dict[int, frozenset] = {}

        def visible(snapshot: int) -> frozenset:
            v = views.get(snapshot)
            if v is None:
                v = views[snapshot] = fs.visible(snapshot)
            return v

        nodes = [top]
        level = [top] if top.mode & _S_IFMT == _S_IFDIR else []
        while level:
            # (each level is in inode order: the directories' dirents in one walk)
            children = [_Src(where, name, d) for d, entries in zip(
                level, fs.read_dirs([d.where for d in level], t), strict=True)
                for where, name in entries]
            children.sort(key=_btree_order)
            inodes = _per_inode(t, BtreeId.inodes, [c.where.inum for c in children])
            for c, keys in zip(children, inodes, strict=True):
                w = c.where
                k = _visible_key(keys, visible(w.snapshot))
                if k is None or k.type != KeyType.inode:
                    raise NotFoundError(f"inode {w.inum} does not exist in snapshot "
                                        f"{w.snapshot}")
                c.raw = raw = k.val
                if len(raw) < _INODE_SIZE:
                    _unpack_inode(raw)      # (its error: the value is short)
                c.mode, c.nlink, c.size = _inode_head(raw)
                c.key_snapshot = k.pos[2]
            nodes += children
            level = [c for c in children if c.mode & _S_IFMT == _S_IFDIR]
        ordered = sorted(nodes, key=_btree_order)
        files = [n for n in ordered if n.mode & _S_IFMT == _S_IFREG]
        pointers = []       # what a copy of a copy will reference again
        for n, keys in zip(files, _per_inode(t, E, [n.where.inum for n in files]), strict=True):
            vis = visible(n.where.snapshot)
            if len(keys) == 1 and keys[0].pos[2] in vis and keys[0].type > _WHITEOUTS:
                n.data = keys       # (one key the file's snapshot sees: most files)
                if keys[0].type == _REFLINK_P:
                    pointers.append(keys[0])
            else:
                n.data = list(filter_visible(keys, vis))
                pointers += [k for k in n.data if k.type == _REFLINK_P]
        if pointers and self.reflink != "never":
            self.remapper.prefetch_indirect(pointers)
        if t.peek(BtreeId.xattrs, (ordered[0].where.inum, 0, 0),
                  (ordered[-1].where.inum, U64_MAX, U32_MAX)) is None:
            return nodes    # no xattrs between the lowest and highest inode number
        xattrs = _per_inode(t, BtreeId.xattrs, [n.where.inum for n in ordered])
        for n, keys in zip(ordered, xattrs, strict=True):
            if keys:
                n.xattrs = [decode_xattr(k.val) for k in filter_visible(keys, visible(
                    n.where.snapshot)) if k.type == KeyType.xattr]
        return nodes

    def _write(self, nodes: list[_Src], pdir: NewDir, into: _Src | None = None) -> None:
        """Queue the copy of `nodes` (from _read_tree) into the directory pdir;
        into: the top node is not copied, its children go straight into pdir.
        The copy's new inodes, the dirents in its new directories and its
        whole-file clones are gathered in a BulkKeys and queued at the end.

        A regular file with one link and no xattrs whose data can be cloned
        whole (most of a tree) takes a short way: its inode value is packed
        straight from the source's fields. Everything else gets an Inode, the
        general way."""
        fs, t, report = self.fs, self.trans, self.report
        if into is not None:
            into.newdir = pdir
        new_inodes = []
        bulk = BulkKeys()
        inode_keys = bulk.inodes
        sec, nsec = now()
        times = _pack_times(sec, nsec, sec, nsec)
        sb = fs.store.sb
        str_hash, data_csum = sb.str_hash_type, sb.data_csum_type
        seed = self._rng.getrandbits
        progress = self.progress
        clone = self.remapper.clone_new if self.reflink != "never" else None
        for n in nodes:
            if n is into:
                continue
            d = n.parent.newdir if n.parent is not None else pdir
            mode = n.mode
            fmt = mode & _S_IFMT
            if progress is not None:
                progress.advance(1)
            inum_where, shared = None, True
            if fmt == _S_IFREG and n.nlink == 1 and not n.xattrs and clone is not None:
                # the short way, if the data can be cloned whole
                dw = d.where
                inum = fs.alloc_inum(t)
                where = inum_where = Where(dw.subvol, dw.snapshot, inum)
                try:
                    sectors = clone(n.where, n.size, where, n.data, bulk)
                except CannotShareError:
                    if self.reflink == "always":
                        raise
                    sectors, shared = None, False     # copy it (the general way)
                if sectors is not None:
                    slot = self._add_entry(d, n.name, inum, mode, bulk)
                    raw = n.raw
                    val = _pack_clone_value(raw[_MODE], raw[_IDS], 1, raw[_SIZE], sectors,
                                            raw[_AM_TIMES], times, raw[_RDEV], seed(64),
                                            str_hash, data_csum, dw.inum, slot)
                    inode_keys[inum] = pack_key_header(len(val), _INODE, 0, 0, 0, 0, inum,
                                                       dw.snapshot) + val
                    n.copy = where
                    report.files += 1
                    report.bytes += n.size
                    report.cloned_bytes += n.size
                    continue
            si = n.inode
            is_dir = fmt == _S_IFDIR
            key = (n.where.subvol, n.where.inum)
            if not is_dir and si.nlink > 1 and key in self.links:
                where, inode = self.links[key]
                self._add_entry(d, n.name, inode.inum, inode.mode, bulk)
                inode.nlink += 1
                n.copy = where
                report.hardlinks += 1
                continue
            dw = d.where
            where = inum_where or Where(dw.subvol, dw.snapshot, fs.alloc_inum(t))
            inode = Inode(where.inum, *_copy_fields(n.value, 2 if is_dir else 1, 0, 0, sec, nsec,
                                                    seed(64), str_hash, data_csum, dw.inum, 0),
                          snapshot=dw.snapshot)
            inode.dir_offset = self._add_entry(d, n.name, inode.inum, mode, bulk)
            n.copy = where
            if fmt == _S_IFREG and not shared:
                copy_data(fs, t, self.writer, n.where, si, where, inode, what=n.what,
                          fresh=True, data=n.data)
                report.copied_bytes += si.size
                report.files += 1
                report.bytes += si.size
            elif fmt == _S_IFREG:
                self.file_data(n.where, si, where, inode, fresh=True, what=n.what,
                               data=n.data, bulk=bulk)
                report.files += 1
                report.bytes += si.size
            elif fmt == _S_IFLNK:
                copy_data(fs, t, self.writer, n.where, si, where, inode, what=n.what,
                          fresh=True)
                report.symlinks += 1
            elif is_dir:
                n.newdir = NewDir(where, inode, True, "")
                d.inode.nlink += 1
                report.dirs += 1
            else:
                report.special += 1
            # file data sets mtime to now: the copy keeps the source's
            inode.mtime_sec, inode.mtime_nsec = si.mtime_sec, si.mtime_nsec
            slots: set[int] = set()
            for x in n.xattrs:
                new_xattr(t, where, inode, x.full_name, x.value, slots)
                report.xattrs += 1
            new_inodes.append((where, inode))
            if not is_dir and si.nlink > 1:
                self.links[key] = (where, inode)
        # every other new inode once, complete (links counted, directories filled)
        for where, inode in new_inodes:
            inode_keys[where.inum] = encode_key(inode.key(where.snapshot))
        bulk.queue(t)

    def _add_entry(self, d: NewDir, name: bytes, inum: int, mode: int, bulk: BulkKeys) -> int:
        """A dirent `name` -> inum in d; returns its slot. In a new directory it
        goes to `bulk`, else it is queued (NewDir.add_entry)."""
        if not d.new:
            return d.add_entry(self.trans, self.fs, name, inum, mode)
        w = d.where
        slot = d.slot(self.trans, self.fs, name)
        entries = bulk.dirents.get(w.inum)
        if entries is None:
            entries = bulk.dirents[w.inum] = {}
        val = _pack_dirent_head(inum, DTYPES.get(mode & _S_IFMT, _DT_UNKNOWN)) + name
        entries[slot] = pack_key_header(len(val), _DIRENT, 0, 0, 0, w.inum, slot,
                                        w.snapshot) + val
        return slot


def _per_inode(t, btree_id: int, inums: list[int]) -> Iterable[list[Key]]:
    """For each inode number of `inums` (ascending, repeats allowed) its keys in
    `btree_id`: those at (0, inum, *) in the inodes btree, at (inum, *, *) in
    the others. Inode numbers are handed out in order, so a tree's are mostly
    dense: then one pass over their span, a dictionary lookup per key, costs
    a tenth of one read per number (read_ranges: two bisections, a slice),
    which is kept for numbers spread thinly over a larger span."""
    if not inums:
        return []
    first, last = inums[0], inums[-1]
    if len(inums) * 4 < last - first:
        if btree_id == BtreeId.inodes:
            ranges = [((0, i, 0), (0, i, U32_MAX)) for i in inums]
        else:
            ranges = [((i, 0, 0), (i, U64_MAX, U32_MAX)) for i in inums]
        return t.read_ranges(btree_id, ranges)
    groups: dict[int, list[Key]] = {i: [] for i in inums}
    get = groups.get
    if btree_id == BtreeId.inodes:
        for k in t.iter(btree_id, (0, first, 0), (0, last, U32_MAX)):
            g = get(k.pos[1])
            if g is not None:
                g.append(k)
    else:
        for k in t.iter(btree_id, (first, 0, 0), (last, U64_MAX, U32_MAX)):
            g = get(k.pos[0])
            if g is not None:
                g.append(k)
    return [groups[i] for i in inums]


def _copy_fields(v, nlink: int, size: int, sectors: int, sec: int, nsec: int, hash_seed: int,
                 str_hash: int, data_csum: int, dir: int, dir_offset: int) -> tuple:
    """The value fields (InodeValue order) of a copy of the inode whose fields are
    v: cp -a keeps the mode, owner, atime, mtime and device number; flags and
    generation start at 0; the rest is the copy's own (ctime and btime: now)."""
    return (v.mode, 0, v.uid, v.gid, nlink, 0, size, sectors, v.atime_sec, v.atime_nsec,
            v.mtime_sec, v.mtime_nsec, sec, nsec, sec, nsec, v.rdev, hash_seed, str_hash,
            data_csum, 0, 0, dir, dir_offset)


def _visible_key(keys: list[Key], visible) -> Key | None:
    """The key a snapshot sees among one position's keys (all its snapshots)."""
    if len(keys) == 1:      # (one version: most positions)
        k = keys[0]
        return k if k.pos[2] in visible and k.type > _WHITEOUTS else None
    for k in filter_visible(keys, visible):
        return k
    return None


# a source object's place in the btrees: its inode number, got in C. (Not with
# the snapshot: _per_inode reads all of a number's snapshots at once, and an int
# key sorts the standard library's 8,000 objects in half the time of a tuple.)
_btree_order = attrgetter("where.inum")


def _child_path(parent: str, name: bytes) -> str:
    return parent.rstrip("/") + "/" + name.decode("utf-8", "backslashreplace")
