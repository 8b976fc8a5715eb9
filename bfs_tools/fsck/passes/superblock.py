"""Pass superblock: every copy readable and current, the layout record agrees.

Repair is rewriting all copies and the layout record, which closing a
writable check does anyway.
"""

from __future__ import annotations

from ...formats.constants import SB_OFFSET
from ...superblock import read_layout_record


def run(ctx) -> None:
    store = ctx.store
    rr = store.sb_report
    for c in rr.copies:
        if c.status == "ok":
            continue
        name = "sb_primary_bad" if c.offset == SB_OFFSET else "sb_backup_bad"
        ctx.report(name, f"superblock copy at byte {c.offset}", c.status)
    note = getattr(store, "check_metadata_fix", None)
    if note:
        ctx.report("sb_metadata_mismatch", "superblock", note)
    if rr.layout_problem:
        ctx.report("sb_layout_bad", "superblock layout", rr.layout_problem)
    # as found before a writable open rewrote it (runner.open_for_check)
    layout = getattr(store, "check_layout", None)
    if layout is None and not hasattr(store, "check_layout"):
        layout = read_layout_record(store.dev)
    if layout != [o for o in store.sb.offsets if o]:
        ctx.report("sb_layout_bad", "layout record at byte 3584",
                   "missing or damaged" if layout is None else
                   f"lists {layout}, superblock says {store.sb.offsets}")
