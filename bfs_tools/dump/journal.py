"""`dump journal`: every valid entry in the ring, in seq order, and the damage found.

Each entry gets a status:
  replay       an unclean open replays it (between the newest flush entry's
               last_seq and that flush entry);
  blacklisted  its seq is blacklisted (in the superblock, or by the recovery the
               next open performs): its keys and the bsets stamped with it are ignored;
  done         older than the replay range: its updates are in the btree nodes;
  ignored      newer than the last commit point and not (yet) blacklisted.
On a clean image nothing is replayed: every entry up to the clean journal seq is
`done`.
"""

from __future__ import annotations

import datetime

from ..codec import record
from ..errors import FormatError
from ..formats.ids import BtreeId, JsetEntryType
from ..journal.blacklist import Blacklist
from ..journal.entries import Datetime, Jset, JsetEntry
from ..journal.reader import JournalScan, plan_replay, scan_journal
from ..keys import key_to_json, key_to_text, load_all_key_types
from . import printable

STATUSES = ("replay", "blacklisted", "done", "ignored")
BlacklistPayload = record("BlacklistPayload")   # only dump reads blacklist entries


class JournalView:
    __slots__ = ("scan", "buckets", "bucket_size", "clean", "clean_seq", "replay", "replay_seqs",
                 "blacklist", "sb_blacklist", "recovery_blacklist")

    def __init__(self, scan: JournalScan, buckets: list[int], bucket_size: int, clean: bool,
                 clean_seq: int | None, replay: tuple[int, int] | None, replay_seqs: set[int],
                 blacklist: Blacklist, sb_blacklist: list[tuple[int, int]],
                 recovery_blacklist: tuple[int, int] | None):
        self.scan = scan
        self.buckets = buckets
        self.bucket_size = bucket_size
        self.clean = clean
        self.clean_seq = clean_seq
        self.replay = replay                # (first, last) seq replayed by an unclean open
        self.replay_seqs = replay_seqs
        self.blacklist = blacklist          # effective: superblock + what recovery adds
        self.sb_blacklist = sb_blacklist
        self.recovery_blacklist = recovery_blacklist

    def status(self, j: Jset) -> str:
        if j.seq in self.blacklist:
            return "blacklisted"
        if j.seq in self.replay_seqs:
            return "replay"
        limit = self.replay[0] if self.replay else (self.clean_seq or 0) + 1
        return "done" if j.seq < limit else "ignored"


def journal_view(dev, sb) -> JournalView:
    """Scan the journal ring of `dev` (superblock `sb`) and classify its entries.

    Needs no btree: the journal of an image whose btrees are damaged still dumps.
    """
    load_all_key_types()
    scan = scan_journal(dev, buckets=sb.journal_buckets, bucket_size=sb.bucket_size,
                        block_size=sb.block_size, magic64=sb.magic64(), csum_type=sb.csum_type)
    sb_bl = list(sb.blacklist)
    replay = None
    replay_seqs: set[int] = set()
    recovery_bl = None
    clean_seq = sb.clean.journal_seq if sb.clean is not None else None
    if not sb.is_clean:
        plan = plan_replay(scan, base_seq=clean_seq or 0, reserved=sb.journal_seq_reserved,
                           blacklist=Blacklist(sb_bl))
        if plan.flush is not None:
            replay = (plan.flush.last_seq, plan.flush.seq)
            replay_seqs = {j.seq for j in plan.entries}
        recovery_bl = plan.new_blacklist
    effective = Blacklist(sb_bl)
    if recovery_bl:
        effective.add(*recovery_bl)
    return JournalView(scan, list(sb.journal_buckets), sb.bucket_size, sb.is_clean, clean_seq,
                       replay, replay_seqs, effective, sb_bl, recovery_bl)


def _btree(b: int) -> str:
    try:
        return BtreeId(b).name
    except ValueError:
        return f"btree{b}"


def _etype(t: int) -> str:
    try:
        return JsetEntryType(t).name
    except ValueError:
        return f"unknown({t})"


def _time(ns: int) -> str:
    try:
        dt = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{ns % 1_000_000_000:09d} UTC"


def _log_text(payload: bytes) -> str:
    return payload.rstrip(b"\0").decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------- JSON


def entry_to_json(e: JsetEntry) -> dict:
    out: dict = {"type": _etype(e.type)}
    try:
        if e.type == JsetEntryType.btree_keys:
            out["btree"] = _btree(e.btree_id)
            out["keys"] = [key_to_json(k, e.btree_id) for k in e.keys()]
        elif e.type == JsetEntryType.btree_root:
            out["btree"] = _btree(e.btree_id)
            out["level"] = e.level
            keys = e.keys()
            out["key"] = key_to_json(keys[0], e.btree_id) if len(keys) == 1 else None
            if len(keys) != 1:
                out["invalid"] = f"{len(keys)} keys in a btree_root entry"
        elif e.type == JsetEntryType.blacklist:
            b = BlacklistPayload.unpack(e.payload)
            out.update(start=b.start, end=b.end)
        elif e.type == JsetEntryType.log:
            out["text"] = _log_text(e.payload)
        elif e.type == JsetEntryType.datetime:
            d = Datetime.unpack(e.payload)
            out.update(time_ns=d.time_ns, time=_time(d.time_ns))
        else:
            out["raw"] = e.payload.hex()
    except (FormatError, ValueError) as err:
        out["invalid"] = str(err)
        out["raw"] = e.payload.hex()
    return out


def jset_to_json(view: JournalView, j: Jset) -> dict:
    return {
        "seq": j.seq,
        "last_seq": j.last_seq,
        "flush": j.is_flush,
        "status": view.status(j),
        "bucket": view.buckets[j.ring_idx],
        "ring_index": j.ring_idx,
        "offset": j.offset,
        "bytes": j.length,
        "entries": [entry_to_json(e) for e in j.entries],
    }


def journal_to_dict(view: JournalView) -> dict:
    return {
        "journal": {
            "buckets": view.buckets,
            "bucket_size": view.bucket_size,
            "clean": view.clean,
            "clean_seq": view.clean_seq,
            "replay": ({"first": view.replay[0], "last": view.replay[1]}
                       if view.replay else None),
            "blacklist": [{"start": s, "end": e} for s, e in view.sb_blacklist],
            "recovery_blacklist": ({"start": view.recovery_blacklist[0],
                                    "end": view.recovery_blacklist[1]}
                                   if view.recovery_blacklist else None),
        },
        "entries": [jset_to_json(view, j) for j in view.scan.jsets],
        "damaged": [{"message": m} for m in view.scan.damaged],
    }


# ---------------------------------------------------------------------------- text


def entry_text(e: JsetEntry) -> list[str]:
    """Lines for one typed entry (without indentation)."""
    name = _etype(e.type)
    try:
        if e.type == JsetEntryType.btree_keys:
            keys = e.keys()
            return [f"btree_keys {_btree(e.btree_id)} ({len(keys)} keys)"] + [
                "  " + printable(key_to_text(k)) for k in keys]
        if e.type == JsetEntryType.btree_root:
            keys = e.keys()
            body = (printable(key_to_text(keys[0])) if len(keys) == 1
                    else f"<invalid: {len(keys)} keys>")
            return [f"btree_root {_btree(e.btree_id)} level {e.level}: {body}"]
        if e.type == JsetEntryType.blacklist:
            b = BlacklistPayload.unpack(e.payload)
            return [f"blacklist {b.start}..{b.end}"]
        if e.type == JsetEntryType.log:
            return [f"log: {printable(_log_text(e.payload))}"]
        if e.type == JsetEntryType.datetime:
            return [f"datetime {_time(Datetime.unpack(e.payload).time_ns)}"]
        return [f"{name}: {len(e.payload)} bytes {e.payload[:32].hex()}"]
    except (FormatError, ValueError) as err:
        return [f"{name}: <invalid: {printable(str(err))}>"]


def journal_lines(view: JournalView):
    nb = len(view.buckets)
    yield (f"journal: {nb} buckets of {view.bucket_size} bytes "
           f"({view.buckets[0]}..{view.buckets[-1]})" if nb else "journal: no buckets")
    if view.clean:
        yield f"state: clean (journal seq {view.clean_seq}); nothing to replay"
    elif view.replay:
        yield f"state: not clean; an open replays seqs {view.replay[0]}..{view.replay[1]}"
    else:
        yield "state: not clean; no valid flush entry to replay"
    bl = ", ".join(f"{s}..{e}" for s, e in view.sb_blacklist) or "none"
    yield f"blacklisted seqs: {bl}" + (
        f" (recovery adds {view.recovery_blacklist[0]}..{view.recovery_blacklist[1]})"
        if view.recovery_blacklist else "")
    yield f"entries: {len(view.scan.jsets)} valid, {len(view.scan.damaged)} damaged"
    for j in view.scan.jsets:
        flags = "flush" if j.is_flush else "noflush"
        yield (f"seq {j.seq} last_seq {j.last_seq} {flags} bucket {view.buckets[j.ring_idx]} "
               f"offset {j.offset} bytes {j.length} [{view.status(j)}]")
        for e in j.entries:
            for line in entry_text(e):
                yield "  " + line
    for m in view.scan.damaged:
        yield f"damaged: {printable(m)}"
