"""The ordered check passes and running them.

Order matters: structure first (superblock, journal, btree topology, key
validity, the snapshot tree), then the allocation pass recomputes alloc info
and accounting from what remains, so that every later repair can go through
ordinary transactions with triggers; a final allocation pass verifies that.
Pass ids are stable (they appear in --json output).
"""

from __future__ import annotations

import time

from ..formats.ids import SbFlags
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
    (6, "alloc", alloc.run),
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
    return Store.open(path, write=mode != "no", strict_journal=False, lenient=True)


def run_passes(ctx: CheckContext, *, progress=None) -> None:
    for pid, name, fn in PASSES:
        ctx.pass_name = name
        t = time.monotonic()
        if progress is not None:
            progress(pid, name)
        fn(ctx)
        ctx.state.pop("inodes", None) if name in ("keys", "snapshot_cleanup", "extents") else None
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
    now = time.time_ns()
    for f in ctx.findings:
        count, _last = store.sb.errors.get(f.error.id, (0, 0))
        store.sb.errors[f.error.id] = (count + 1, now)
    store.sb.flags &= ~SbFlags.deleting_snapshots
    store.close()
