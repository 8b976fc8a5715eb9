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

from ..errors import BfsError
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
    from ..io.device import FileDevice
    from ..superblock import read_layout_record

    layout = None
    if mode != "no":
        # the writable open rewrites the layout record: read it as found first
        try:
            with FileDevice(str(path)) as dev:
                layout = read_layout_record(dev)
        except BfsError:
            pass
    store = Store.open(path, write=mode != "no", strict_journal=False, lenient=True)
    store.check_layout = layout if mode != "no" else _layout(store)
    if mode != "no":
        _distrust_alloc(store)
    return store


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
    for pid, name, fn in PASSES:
        ctx.pass_name = name
        t = time.monotonic()
        if progress is not None:
            progress(pid, name)
        fn(ctx)
        if name == "topology":
            protect_in_use(ctx)
        if name not in ("xattrs",):
            ctx.state.pop("inodes", None)   # the pass may have changed inodes
        ctx.timings[name] = time.monotonic() - t


def finish(ctx: CheckContext) -> None:
    """Close the store: record error counts and write (or, if a declined repair left the
    tree in memory different from the image, write nothing)."""
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
