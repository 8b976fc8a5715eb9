"""`dump usage` and `df`: the persistent space accounting counters.

Both read only the accounting btree (and the superblock): never the other
btrees, so their cost does not grow with the amount of metadata.
"""

from __future__ import annotations

from ..alloc.accounting import decode_counters
from ..errors import FormatError
from ..formats.constants import SECTOR_SIZE
from ..formats.ids import ACCOUNTING_COUNTERS, AccountingType, BtreeId, DataType
from ..keys import fmt_pos

ACCOUNTED_TYPES = [t for t in DataType if t != DataType.free]


def _human(n: int) -> str:
    from ..cli.output import human

    return human(n)


def _name(enum, v: int) -> str:
    try:
        return enum(v).name
    except ValueError:
        return f"unknown({v})"


class Usage:
    __slots__ = ("data_types", "inodes", "btrees", "snapshots", "reflink", "other")

    def __init__(self) -> None:
        self.data_types: dict[str, dict[str, int]] = {}   # buckets, sectors
        self.inodes = 0
        self.btrees: dict[str, int] = {}                  # sectors
        self.snapshots: dict[int, int] = {}               # sectors
        self.reflink: dict[str, int] = {}
        self.other: list[dict] = []                       # unknown or invalid


def read_usage(btrees) -> Usage:
    """Every accounting counter, by kind (missing counters read as zero)."""
    u = Usage()
    u.data_types = {t.name: {"buckets": 0, "sectors": 0} for t in ACCOUNTED_TYPES}
    u.btrees = {b.name: 0 for b in BtreeId}
    u.reflink = {n: 0 for n in ACCOUNTING_COUNTERS[AccountingType.reflink]}
    for k in btrees.iter(BtreeId.accounting):
        atype, sub, _snap = k.pos
        try:
            counters = decode_counters(k.val)
        except FormatError as e:
            u.other.append({"pos": fmt_pos(k.pos), "invalid": str(e)})
            continue
        names = ACCOUNTING_COUNTERS.get(atype, ())
        c = dict(zip(names, counters, strict=False))
        for n in names:
            c.setdefault(n, 0)
        if atype == AccountingType.data_type and sub != DataType.free:
            entry = u.data_types.setdefault(_name(DataType, sub), {"buckets": 0, "sectors": 0})
            entry.update(c)
        elif atype == AccountingType.nr_inodes and sub == 0:
            u.inodes = c["inodes"]
        elif atype == AccountingType.btree:
            u.btrees[_name(BtreeId, sub)] = c["sectors"]
        elif atype == AccountingType.snapshot:
            u.snapshots[sub] = c["sectors"]
        elif atype == AccountingType.reflink and sub == 0:
            u.reflink.update(c)
        else:
            u.other.append({"pos": fmt_pos(k.pos), "counters": counters})
    return u


def usage_to_dict(u: Usage, sb) -> dict:
    return {
        "bucket_size": sb.bucket_size,
        "nbuckets": sb.nbuckets,
        "data_types": u.data_types,
        "inodes": u.inodes,
        "btrees": u.btrees,
        "snapshots": [{"snapshot": s, "sectors": n} for s, n in sorted(u.snapshots.items())],
        "reflink": u.reflink,
        "other": u.other,
    }


def usage_lines(u: Usage, sb):
    bs = sb.bucket_size
    yield (f"filesystem: {_human(sb.nbuckets * bs)}, {sb.nbuckets} buckets of {_human(bs)}")
    yield ""
    yield f"{'data type':<14} {'buckets':>10} {'bucket space':>13} {'sectors':>14} {'live data':>12}"
    for name, c in u.data_types.items():
        yield (f"{name:<14} {c['buckets']:>10} {_human(c['buckets'] * bs):>13} "
               f"{c['sectors']:>14} {_human(c['sectors'] * SECTOR_SIZE):>12}")
    yield ""
    yield f"inodes: {u.inodes}"
    yield ""
    yield f"{'btree':<14} {'sectors':>14} {'size':>12}"
    for name, sectors in u.btrees.items():
        yield f"{name:<14} {sectors:>14} {_human(sectors * SECTOR_SIZE):>12}"
    yield ""
    yield f"{'snapshot':<14} {'sectors':>14} {'size':>12}"
    if not u.snapshots:
        yield "(no data in any snapshot)"
    for snap, sectors in sorted(u.snapshots.items(), reverse=True):
        sid = "U32_MAX" if snap == 0xFFFFFFFF else str(snap)
        yield f"{sid:<14} {sectors:>14} {_human(sectors * SECTOR_SIZE):>12}"
    yield ""
    yield "reflink: " + ", ".join(
        f"{n} {v} ({_human(v * SECTOR_SIZE)})" for n, v in u.reflink.items())
    yield _shared_line(shared_space(u))
    for o in u.other:
        yield f"other counter {o['pos']}: " + (
            f"<invalid: {o['invalid']}>" if "invalid" in o else " ".join(map(str, o["counters"])))


def shared_space(u: Usage) -> dict:
    """Shared vs exclusive file data (bytes), from the counters: data in indirect
    extents (reflink_v) is shared — reached through reflink_p keys, `referenced`
    bytes of files in all; the rest of the user data is exclusive to one extent."""
    shared = u.reflink.get("indirect_sectors", 0)
    user = u.data_types.get(DataType.user.name, {}).get("sectors", 0)
    return {"shared_bytes": shared * SECTOR_SIZE,
            "exclusive_bytes": max(0, user - shared) * SECTOR_SIZE,
            "referenced_bytes": u.reflink.get("referenced_sectors", 0) * SECTOR_SIZE}


def _shared_line(r: dict) -> str:
    return (f"data: {_human(r['exclusive_bytes'])} exclusive, {_human(r['shared_bytes'])} "
            f"shared (reflinked: {_human(r['referenced_bytes'])} of files refer to it)")


# ---------------------------------------------------------------------------- df


def df_report(u: Usage, sb) -> dict:
    """Space as `df` sees it: usable = buckets outside the superblock copies and the
    journal; used = buckets holding btree nodes or file data; free = usable - used."""
    bs = sb.bucket_size
    reserved = sb.first_bucket + 1 + len(sb.journal_buckets)
    usable = max(0, sb.nbuckets - reserved)
    used = sum(c["buckets"] for name, c in u.data_types.items()
               if name not in (DataType.superblock.name, DataType.journal.name))
    free = max(0, usable - used)
    return {
        "bucket_size": bs,
        "buckets": {"total": sb.nbuckets, "reserved": reserved, "usable": usable,
                    "used": used, "free": free},
        "size": usable * bs,
        "used": used * bs,
        "free": free * bs,
        "use_percent": (100 * used + usable - 1) // usable if usable else 0,
        "data_types": {name: {"buckets": c["buckets"], "sectors": c["sectors"],
                              "bytes": c["sectors"] * SECTOR_SIZE}
                       for name, c in u.data_types.items()},
        "inodes": u.inodes,
        "reflink": shared_space(u),
    }


def df_lines(report: dict, name: str):
    rows = [("Filesystem", "Size", "Used", "Avail", "Use%"),
            (name, _human(report["size"]), _human(report["used"]), _human(report["free"]),
             f"{report['use_percent']}%")]
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        yield (f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}  "
               f"{r[4]:>{w[4]}}")
    yield ""
    b = report["buckets"]
    bs = report["bucket_size"]
    yield (f"buckets: {b['total']} of {_human(bs)}: {b['reserved']} reserved (superblock, "
           f"journal), {b['used']} used, {b['free']} free")
    yield f"{'data type':<12} {'buckets':>10} {'allocated':>12} {'live data':>12}"
    for dt, c in report["data_types"].items():
        yield (f"{dt:<12} {c['buckets']:>10} {_human(c['buckets'] * bs):>12} "
               f"{_human(c['bytes']):>12}")
    if "reflink" in report:
        yield _shared_line(report["reflink"])
    yield f"inodes: {report['inodes']}"
