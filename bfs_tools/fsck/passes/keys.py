"""Pass keys: every key valid for its type and btree; snapshot btrees' keys in
existing snapshots. Invalid keys are deleted (without triggers: the alloc pass
that follows recomputes everything derived from the remaining keys)."""

from __future__ import annotations

from ...formats.ids import SNAPSHOT_BTREES, BtreeId
from ...keys import validate_key
from ..util import Batch, loc, table


def run(ctx) -> None:
    bt = ctx.store.btrees
    snaps = table(ctx).snapshots
    batch = Batch(ctx, triggers=False)
    for btree in BtreeId:
        for k in list(bt.iter(btree)) if ctx.writable else bt.iter(btree):
            problem = validate_key(btree, k)
            if problem:
                name = "key_type_not_allowed" if "not allowed" in problem else (
                    "key_bad_pos" if "size" in problem or "position" in problem else "key_bad_value")
                if ctx.report(name, loc(btree, k.pos), problem):
                    batch.t().delete(btree, k.pos)
                continue
            if btree in SNAPSHOT_BTREES and k.pos[2] not in snaps:
                if ctx.report("key_in_missing_snapshot", loc(btree, k.pos),
                              f"snapshot {k.pos[2]} does not exist"):
                    batch.t().delete(btree, k.pos)
    batch.flush()
