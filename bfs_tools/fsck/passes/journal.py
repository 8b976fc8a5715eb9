"""Pass journal: damage found while reading the journal during the open.

A damaged entry outside the replay range only needs reporting; missing entries
inside it mean updates were lost (the repair accepts what replay could rebuild,
and the commit at the end of a writable check leaves a consistent journal).
"""

from __future__ import annotations


def run(ctx) -> None:
    for msg in ctx.store.journal_problems:
        if "missing" in msg:
            ctx.report("journal_entries_missing", "journal", msg)
        elif "bad key" in msg:
            ctx.report("journal_key_bad", "journal", msg)
        else:
            ctx.report("journal_entry_bad_csum", "journal", msg)
