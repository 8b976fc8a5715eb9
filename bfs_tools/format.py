"""`bfs format`: choose the geometry, write an empty filesystem through the store.

Cost does not depend on the device size: the free space is one freespace key,
only superblock/journal buckets get alloc keys, and nothing is zeroed (the
device is discarded, which punches holes in image files).
"""

from __future__ import annotations

import os
import stat
import time
import uuid as uuidlib
from dataclasses import dataclass

from .errors import DeviceError, ExistsError, UsageError
from .formats.constants import (
    BLOCK_SIZE_DEFAULT,
    BLOCK_SIZE_MAX,
    BLOCK_SIZE_MIN,
    BTREE_NODE_SIZE_DEFAULT,
    BTREE_NODE_SIZE_MAX,
    BTREE_NODE_SIZE_MIN,
    BUCKET_SIZE_MAX,
    BUCKET_SIZE_MIN,
    EXTENT_MAX_DEFAULT,
    FORMAT_VERSION,
    FORMAT_VERSION_MIN,
    INLINE_DATA_MAX_DEFAULT,
    JOURNAL_BUCKETS_MAX,
    JOURNAL_BUCKETS_MIN,
    JOURNAL_BYTES_MAX,
    JOURNAL_SEQ_RESERVATION,
    LAYOUT_OFFSET,
    MIN_DATA_BUCKETS,
    ROOT_INODE,
    ROOT_SNAPSHOT,
    ROOT_SNAPSHOT_TREE,
    ROOT_SUBVOL,
    SB_MAX_SIZE,
    SB_OFFSET,
    SECTOR_SIZE,
)
from .formats.ids import (
    BtreeId,
    ChecksumType,
    DataType,
    FeatureCompat,
    FeatureIncompat,
    FeatureRoCompat,
    StrHashType,
)
from .io.device import Device, FileDevice
from .io.signatures import detect
from .superblock import Superblock, end_backup_candidates, new_uuid


@dataclass
class Geometry:
    device_size: int
    block_size: int
    bucket_size: int
    btree_node_size: int
    nbuckets: int
    first_bucket: int
    journal_buckets: list[int]
    extent_max: int
    inline_data_max: int

    @property
    def usable_buckets(self) -> int:
        return self.nbuckets - self.first_bucket - 1 - len(self.journal_buckets)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def auto_bucket_size(size: int) -> int:
    if size < 128 << 20:
        return 64 << 10
    if size < 1 << 30:
        return 256 << 10
    if size < 64 << 30:
        return 512 << 10
    if size < 1 << 40:
        return 1 << 20
    return 2 << 20


def plan_geometry(size: int, *, block_size: int | None = None, bucket_size: int | None = None,
                  btree_node_size: int | None = None) -> Geometry:
    block = block_size or BLOCK_SIZE_DEFAULT
    if not (_pow2(block) and BLOCK_SIZE_MIN <= block <= BLOCK_SIZE_MAX):
        raise UsageError(f"block size {block} must be a power of two from {BLOCK_SIZE_MIN} to "
                         f"{BLOCK_SIZE_MAX}")
    bucket = bucket_size or max(auto_bucket_size(size), block, btree_node_size or 0)
    if not (_pow2(bucket) and BUCKET_SIZE_MIN <= bucket <= BUCKET_SIZE_MAX):
        raise UsageError(f"bucket size {bucket} must be a power of two from {BUCKET_SIZE_MIN} "
                         f"to {BUCKET_SIZE_MAX}")
    if bucket < block:
        raise UsageError(f"bucket size {bucket} is smaller than the block size {block}")
    node = btree_node_size or max(block, min(BTREE_NODE_SIZE_DEFAULT, bucket))
    if not (_pow2(node) and BTREE_NODE_SIZE_MIN <= node <= BTREE_NODE_SIZE_MAX):
        raise UsageError(f"btree node size {node} must be a power of two from "
                         f"{BTREE_NODE_SIZE_MIN} to {BTREE_NODE_SIZE_MAX}")
    if node > bucket:
        raise UsageError(f"bucket size {bucket} is smaller than the btree node size {node}")
    if node < block:
        raise UsageError(f"btree node size {node} is smaller than the block size {block}")
    nbuckets = size // bucket
    first = -(-(SB_OFFSET + 2 * SB_MAX_SIZE) // bucket)
    nj = max(JOURNAL_BUCKETS_MIN, min(JOURNAL_BUCKETS_MAX, nbuckets // 128))
    nj = max(JOURNAL_BUCKETS_MIN, min(nj, JOURNAL_BYTES_MAX // bucket))
    # every btree needs a root node even when empty
    root_buckets = -(-len(BtreeId) * node // bucket)
    need = first + nj + 1 + root_buckets + MIN_DATA_BUCKETS
    if nbuckets < need:
        raise UsageError(f"size {size} is too small: need at least {need * bucket} bytes with "
                         f"{bucket}-byte buckets")
    return Geometry(
        device_size=size, block_size=block, bucket_size=bucket, btree_node_size=node,
        nbuckets=nbuckets, first_bucket=first,
        journal_buckets=list(range(first, first + nj)),
        extent_max=min(EXTENT_MAX_DEFAULT, bucket),
        inline_data_max=min(INLINE_DATA_MAX_DEFAULT, node // 8))


def parse_uuid(text: str) -> bytes:
    try:
        return uuidlib.UUID(text).bytes
    except ValueError:
        raise UsageError(f"invalid UUID {text!r}") from None


def new_superblock(geo: Geometry, *, label: str = "", user_uuid: bytes | None = None,
                   data_csum: ChecksumType = ChecksumType.crc32c) -> Superblock:
    label_b = label.encode("utf-8")
    if len(label_b) > 32:
        raise UsageError(f"label is {len(label_b)} bytes; at most 32 allowed")
    now = time.time_ns()
    return Superblock(
        version=FORMAT_VERSION, version_min=FORMAT_VERSION_MIN, csum_type=ChecksumType.crc32c,
        data_csum_type=data_csum, str_hash_type=StrHashType.xxh3_seeded, uuid=new_uuid(),
        user_uuid=user_uuid or new_uuid(), label=label_b, seq=0, created_ns=now,
        write_time_ns=now, block_size=geo.block_size, bucket_size=geo.bucket_size,
        btree_node_size=geo.btree_node_size, extent_max=geo.extent_max,
        inline_data_max=geo.inline_data_max, first_bucket=geo.first_bucket,
        nbuckets=geo.nbuckets, device_size=geo.device_size,
        features_incompat=int(FeatureIncompat.reflink | FeatureIncompat.inline_data
                              | FeatureIncompat.snapshots),
        features_ro_compat=int(FeatureRoCompat.alloc_info),
        features_compat=int(FeatureCompat.fsck_error_counts),
        flags=0, journal_seq_reserved=JOURNAL_SEQ_RESERVATION, sb_max_size=SB_MAX_SIZE,
        offsets=[SB_OFFSET, SB_OFFSET + SB_MAX_SIZE, (geo.nbuckets - 1) * geo.bucket_size],
        journal_buckets=list(geo.journal_buckets))


def open_target(path: str, size: int | None, force: bool) -> Device:
    """Open (creating a sparse file if needed) the device to format."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise DeviceError(f"{path}: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DeviceError(f"{path}: is a directory, not an image file or block device")
    if st is None:
        if size is None:
            raise UsageError(f"{path} does not exist: give --size to create it")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise DeviceError(f"{path}: directory {parent} does not exist")
        return FileDevice(path, write=True, create_size=size)
    dev = FileDevice(path, write=True)
    try:
        if size is not None:
            if dev.is_block_device:
                if size > dev.size:
                    raise UsageError(f"--size {size} is larger than the device ({dev.size} bytes)")
            elif size != dev.size:
                os.ftruncate(dev.fd, size)
                dev.size = size
        if not force:
            found = detect(dev)
            if found:
                raise ExistsError(f"{path} already holds a {found[0]} signature; use --force to "
                                  "overwrite it")
        return dev
    except BaseException:
        dev.close()
        raise


def wipe_old_superblocks(dev: Device) -> None:
    """Zero every place an old superblock or layout record could be found, where
    it does not read as zeros already: a fresh sparse image gets no blocks (and
    no flush), so the discard that follows has nothing to free (on an image file
    of 1 GiB that had been ~25 ms of punching out the zeros just written)."""
    zero = bytes(4096)
    wrote = False
    for off in [LAYOUT_OFFSET - LAYOUT_OFFSET % 512, SB_OFFSET, SB_OFFSET + SB_MAX_SIZE,
                *end_backup_candidates(dev.size)]:
        at = off - off % 512
        if off + 4096 <= dev.size and dev.read(at, 4096) != zero:
            dev.write(at, zero)
            wrote = True
    if wrote:
        dev.flush()


def bootstrap(store) -> None:
    """The initial metadata of an empty filesystem, through ordinary transactions."""
    from .alloc import freespace
    from .alloc.alloc_key import Alloc, alloc_key
    from .fs.inode import Inode
    from .snapshots.values import Snapshot, SnapshotTree, Subvolume

    sb = store.sb
    t = store.transaction()
    # every bucket starts free; marking the special ones below takes them out
    t.update(BtreeId.freespace, freespace.range_key(sb.first_bucket, sb.nbuckets - 1))
    t.commit(run_triggers=False)

    t = store.transaction()
    bsec = sb.bucket_size // SECTOR_SIZE
    for b in [*range(sb.first_bucket), sb.nbuckets - 1]:
        t.update(BtreeId.alloc, alloc_key(b, Alloc(0, DataType.superblock, bsec)))
    for b in sb.journal_buckets:
        t.update(BtreeId.alloc, alloc_key(b, Alloc(0, DataType.journal, bsec)))
    now = time.time_ns()
    sec, nsec = divmod(now, 1_000_000_000)
    t.update(BtreeId.snapshot_trees, SnapshotTree(ROOT_SNAPSHOT_TREE, ROOT_SUBVOL,
                                                  ROOT_SNAPSHOT).key())
    t.update(BtreeId.snapshots, Snapshot(ROOT_SNAPSHOT, subvol=ROOT_SUBVOL,
                                         tree=ROOT_SNAPSHOT_TREE).key())
    t.update(BtreeId.subvolumes, Subvolume(ROOT_SUBVOL, snapshot=ROOT_SNAPSHOT, inode=ROOT_INODE,
                                           otime_sec=sec, otime_nsec=nsec).key())
    uid, gid = os.getuid(), os.getgid()
    root = Inode(ROOT_INODE, mode=stat.S_IFDIR | 0o755, uid=uid, gid=gid, nlink=2,
                 atime_sec=sec, atime_nsec=nsec, mtime_sec=sec, mtime_nsec=nsec,
                 ctime_sec=sec, ctime_nsec=nsec, btime_sec=sec, btime_nsec=nsec,
                 hash_seed=int.from_bytes(os.urandom(8), "little"),
                 str_hash=sb.str_hash_type, data_csum=sb.data_csum_type, subvol=ROOT_SUBVOL,
                 snapshot=ROOT_SNAPSHOT)
    t.update(BtreeId.inodes, root.key())
    t.commit()


def format_device(dev: Device, geo: Geometry, *, label: str = "",
                  user_uuid: bytes | None = None,
                  data_csum: ChecksumType = ChecksumType.crc32c, populate=None):
    """Format `dev`; `populate(store)` may fill it before the final commit."""
    from .store import Store

    wipe_old_superblocks(dev)
    dev.discard(0, dev.size)
    sb = new_superblock(geo, label=label, user_uuid=user_uuid, data_csum=data_csum)
    store = Store.create(dev, sb)
    try:
        bootstrap(store)
        if populate is not None:
            populate(store)
        store.close()
    except BaseException:
        store.abort()
        raise
    return sb
