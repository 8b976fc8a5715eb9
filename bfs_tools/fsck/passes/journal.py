"""Pass journal: damage found while reading the journal during the open.

A damaged entry outside the replay range only needs reporting (a warning);
missing entries inside it mean updates were lost (the repair accepts what
replay could rebuild, and the commit at the end of a writable check leaves a
consistent journal). Sequence numbers must go forward (journal/reader.py
plan_replay): an entry whose last_seq is after its own seq, a seq written
twice with other contents, or replay entries out of ring order were not
written by this journal (journal_seq_backwards: such entries are not
replayed, and the repairing open rewrites the journal state).

The journal is read only when the image was not closed cleanly.
"""

from __future__ import annotations

# what the journal reader says (store.journal_problems) -> error name
_KINDS = (
    ("after its own seq", "journal_seq_backwards"),
    ("written twice", "journal_seq_backwards"),
    ("in the ring", "journal_seq_backwards"),
    ("further back than any journal", "journal_seq_backwards"),
    ("beyond the reserved", "journal_seq_backwards"),
    ("commit point is lost", "journal_entries_missing"),
    ("missing", "journal_entries_missing"),
    ("bad key", "journal_key_bad"),
)


def classify(msg: str) -> str:
    for needle, name in _KINDS:
        if needle in msg:
            return name
    return "journal_entry_bad_csum"


def run(ctx) -> None:
    for msg in ctx.store.journal_problems:
        ctx.report(classify(msg), "journal", msg)
