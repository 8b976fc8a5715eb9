"""The ordered check passes and running them.

Order matters: structure first (superblock, journal, btree topology, key
validity, the snapshot tree), then the allocation pass recomputes alloc info
and accounting from what remains, so that every later repair can go through
ordinary transactions with triggers; a final allocation pass verifies that.
Pass ids are stable (they appear in --json output).

Writing while the alloc info is not yet trusted (a repairing check, before the
alloc pass):
  * no allocation may land in a bucket that is in use: every bucket the image
    references when the check starts (btree nodes, data, superblock, journal)
    is kept from the allocator for the whole check (`Allocator.protected`);
    the write points are not resumed;
  * repairs go straight into the tree as unjournalled changes of dirty nodes
    (fsck/util.py apply_direct): no node is written, so none moves, before the
    alloc pass has counted the nodes where they are; moves queued by merges
    meanwhile are dropped (their triggers would act on alloc keys that may be
    wrong, and fail), and from the alloc pass on every move is accounted.
"""

from __future__ import annotations

import time

from ..errors import BfsError, CorruptionError
from ..formats.ids import BtreeId, KeyType, SbFlags
from ..store import Store
from .context import CheckContext
from .passes import (
    alloc,
    dirents_xattrs,
    inodes_extents,
    journal,
    keys,
    namespace,
    reflink,
    snapshots,
    superblock,
    topology,
)


def _cleanup(ctx) -> None:
    """Finish an interrupted snapshot deletion (reported by the snapshots pass)."""
    if ctx.state.pop("cleanup_pending", False) and ctx.writable:
        from ..fs.filesystem import Filesystem
        from ..snapshots.cleanup import cleanup_dead_snapshots

        cleanup_dead_snapshots(Filesystem(ctx.store))


def _alloc(ctx) -> None:
    if ctx.writable:
        # node moves queued so far (merges during repairs) are not accounted:
        # the count is of the tree as it is now
        ctx.store.btrees.flush_moves()
    alloc.run(ctx)
    _trust_alloc(ctx)


def _verify_alloc(ctx) -> None:
    """After repairs, the alloc pass again: triggers must have kept everything in step."""
    if ctx.writable and ctx.fixed:
        alloc.run(ctx)


PASSES = [
    (1, "superblock", superblock.run),
    (2, "journal", journal.run),
    (3, "topology", topology.run),
    (4, "keys", keys.run),
    (5, "snapshots", snapshots.run),
    (6, "alloc", _alloc),
    (7, "snapshot_cleanup", _cleanup),
    (8, "extents", inodes_extents.run_extents),
    (9, "reflink", reflink.run),
    (10, "inodes", inodes_extents.run_inodes),
    (11, "root", namespace.run_root),
    (12, "dirents", dirents_xattrs.run_dirents),
    (13, "xattrs", dirents_xattrs.run_xattrs),
    (14, "directory_structure", namespace.run_structure),
    (15, "alloc_verify", _verify_alloc),
]


def open_for_check(path, mode: str) -> Store:
    """Open an image path (or a Device: tests, crash states) for a check in `mode`."""
    from ..io.device import Device, FileDevice
    from ..superblock import read_layout_record

    layout = None
    if mode != "no":
        # the writable open rewrites the layout record: read it as found first
        try:
            if isinstance(path, Device):
                layout = read_layout_record(path)
            else:
                with FileDevice(str(path)) as dev:
                    layout = read_layout_record(dev)
        except BfsError:
            pass
    write = mode != "no"
    try:
        store = Store.open(path, write=write, strict_journal=False, lenient=True)
        failed = None
    except CorruptionError as e:
        store, failed = None, e
    if store is None or _all_roots_bad(store):
        fixed = _open_probed(path, write, store)
        if fixed is not None:
            store = fixed
        elif failed is not None:
            raise failed
    store.check_layout = layout if write else _layout(store)
    if mode != "no":
        _distrust_alloc(store)
    return store


def _all_roots_bad(store) -> bool:
    bad = sum(1 for name, _msg in store.open_problems if name == "btree_root_bad")
    return bad >= len(BtreeId) - 1


def _probe(dev, sb) -> tuple[int, int, int] | None:
    """(magic64, csum_type, votes) that the btree roots and journal entries agree
    on, when the superblock's do not open any of them."""
    from collections import Counter

    from ..btree.ptr import decode_ptr
    from ..checksum import checksum
    from ..formats.constants import BTREE_NODE_MAGIC, JSET_MAGIC
    from ..formats.ids import ChecksumType
    from ..keys import decode_keys

    votes: Counter = Counter()

    def vote(m64: int, csum: int, data: bytes) -> None:
        for ct in ChecksumType:
            try:
                if checksum(ct, data) == csum:
                    votes[(m64, int(ct))] += 1
            except BfsError:
                pass

    for r in (sb.clean.roots if sb.clean else []):
        try:
            ptr = decode_ptr(decode_keys(r.key)[0])
            hdr = dev.read(ptr.sector * 512, 72)
        except (BfsError, IndexError):
            continue
        vote(int.from_bytes(hdr[8:16], "little") ^ BTREE_NODE_MAGIC,
             int.from_bytes(hdr[0:8], "little"), hdr[8:72])
    for b in sb.journal_buckets:
        try:
            head = dev.read(b * sb.bucket_size, 40)
            n = int.from_bytes(head[36:40], "little")
            if n > sb.bucket_size - 40:
                continue
            body = dev.read(b * sb.bucket_size + 8, 32 + n)
        except BfsError:
            continue
        vote(int.from_bytes(head[8:16], "little") ^ JSET_MAGIC,
             int.from_bytes(head[0:8], "little"), body)
    if not votes:
        return None
    (m64, ct), n = votes.most_common(1)[0]
    if n < 2 or (m64, ct) == (sb.magic64(), sb.csum_type):
        return None
    return m64, ct, n


def _open_probed(path, write: bool, failed_store) -> Store | None:
    """Every btree root fails: is it the superblock's checksum type or UUID? Then
    the store is opened again with the values the nodes and entries agree on
    (a repairing check writes them to the superblock)."""
    from ..formats.ids import ChecksumType
    from ..io.device import Device, FileDevice
    from ..store import check_features
    from ..superblock import read_superblock

    if failed_store is not None:
        failed_store.abort()
    given = isinstance(path, Device)
    dev = path if given else FileDevice(str(path), write=write)
    try:
        rr = read_superblock(dev)
        found = _probe(dev, rr.sb)
        if found is None:
            dev.close()
            return None
        m64, ct, n = found
        sb = rr.sb
        notes = []
        if ct != sb.csum_type:
            notes.append(f"checksum type {_ct_name(sb.csum_type)} in the superblock, "
                         f"{_ct_name(ct)} in the metadata")
        if m64 != sb.magic64():
            notes.append("UUID does not match the metadata's magic numbers (its first 8 "
                         "bytes are taken from them)")
        sb.uuid = m64.to_bytes(8, "little") + sb.uuid[8:]
        sb.csum_type = ChecksumType(ct)
        check_features(sb, write)
        store = Store(dev, sb, read_only=not write, sb_report=rr)
        store.owns_device = not given
        store.btrees.lenient = True
        store._check_geometry()
        store._load(False)
        store.check_metadata_fix = "; ".join(notes) + f" ({n} structures agree)"
        return store
    except BaseException:
        dev.close()
        raise


def _ct_name(ct: int) -> str:
    from ..formats.ids import ChecksumType

    try:
        return ChecksumType(ct).name
    except ValueError:
        return str(ct)


def _layout(store):
    from ..superblock import read_layout_record

    return read_layout_record(store.dev)


def _distrust_alloc(store) -> None:
    a = store.allocator
    from ..alloc.allocator import WritePoint

    a.wps = {"btree": WritePoint(), "user": WritePoint()}
    a.open = set()
    a.protected = set()
    a.apply_moves = lambda moves: None


def _trust_alloc(ctx) -> None:
    ctx.state["alloc_trusted"] = True
    a = ctx.store.allocator
    if a is not None and "apply_moves" in vars(a):
        del a.apply_moves


def protect_in_use(ctx) -> None:
    """Keep every bucket the image references now from the allocator (repairing
    checks only; called once the topology pass has read every node)."""
    store = ctx.store
    a = store.allocator
    if not ctx.writable or a is None:
        return
    from ..extents import decode_extent
    from ..reflink import decode_reflink_v

    sb = store.sb
    bt = store.btrees
    bsec = sb.bucket_size // 512
    used = set(range(sb.first_bucket)) | {sb.nbuckets - 1} | set(sb.journal_buckets)
    for btree in BtreeId:
        for node in bt.walk_nodes(btree):
            if node.sector is not None:
                used.add(node.sector // bsec)
    for btree in (BtreeId.extents, BtreeId.reflink):
        for k in bt.iter(btree):
            try:
                if k.type == KeyType.extent:
                    e = decode_extent(k.val)
                elif k.type == KeyType.reflink_v:
                    e = decode_reflink_v(k.val).extent
                else:
                    continue
            except BfsError:
                continue
            first = e.sector // bsec
            last = (e.sector + max(e.region_sectors, 1) - 1) // bsec
            if last - first < 64:
                used.update(range(first, last + 1))
    a.protected = used
    ctx.state["protected"] = len(used)


def run_passes(ctx: CheckContext, *, progress=None) -> None:
    from ..gcpause import collector_paused

    with collector_paused():    # (why: bfs_tools/gcpause.py)
        _run_passes(ctx, progress)


def _run_passes(ctx: CheckContext, progress) -> None:
    for pid, name, fn in PASSES:
        ctx.pass_name = name
        t = time.monotonic()
        if progress is not None:
            progress(pid, name)
        fn(ctx)
        if name == "topology":
            protect_in_use(ctx)
        if name in ("snapshot_cleanup", "directory_structure"):
            ctx.state.pop("inodes", None)   # changes made without a fsck Batch
        ctx.timings[name] = time.monotonic() - t


def finish(ctx: CheckContext, *, release: bool = True) -> None:
    """Close the store: record error counts and write (or, if a declined repair left the
    tree in memory different from the image, write nothing). Then the tree in memory
    is released (btree.tree.Btrees.release) and the passes' caches dropped.

    release=False leaves them as they are, for a process that ends right after
    without freeing objects (os._exit) and runs no cyclic collector meanwhile:
    freeing every key, inode and node one at a time is then wasted work (~40 ms
    of a 100,000-file check)."""
    try:
        _finish(ctx)
    finally:
        if release:
            ctx.state.clear()
            ctx.store.btrees.release()


def _finish(ctx: CheckContext) -> None:
    store = ctx.store
    if store.read_only:
        store.close()
        return
    if ctx.state.get("abort_writes"):
        for f in ctx.findings:
            f.fixed = False
        store.abort()
        return
    _trust_alloc(ctx)
    now = time.time_ns()
    for f in ctx.findings:
        count, _last = store.sb.errors.get(f.error.id, (0, 0))
        store.sb.errors[f.error.id] = (count + 1, now)
    store.sb.flags &= ~SbFlags.deleting_snapshots
    store.close()
