"""`dump super`: every superblock field, as text (like dumpe2fs -h) and as JSON."""

from __future__ import annotations

import datetime
import uuid

from ..checksum import checksum_name
from ..formats.constants import SECTOR_SIZE
from ..formats.fsck_errors import BY_ID
from ..formats.ids import (
    BtreeId,
    FeatureCompat,
    FeatureIncompat,
    FeatureRoCompat,
    SbFlags,
    StrHashType,
)
from ..keys import decode_keys
from ..superblock import ReadResult, Superblock


def _flags(value: int, enum) -> list[str]:
    names = [m.name for m in enum if value & m]
    unknown = value & ~sum(int(m) for m in enum)
    if unknown:
        names.append(f"unknown(0x{unknown:x})")
    return names


def _time(ns: int) -> str:
    if not ns:
        return "never"
    dt = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def _str_hash(t: int) -> str:
    try:
        return StrHashType(t).name
    except ValueError:
        return f"unknown({t})"


def _human(n: int) -> str:
    from ..cli.output import human

    return human(n)


def super_to_dict(rr: ReadResult) -> dict:
    sb = rr.sb
    out = {
        "magic": "bfs",
        "version": sb.version,
        "version_min": sb.version_min,
        "uuid": str(uuid.UUID(bytes=sb.user_uuid)),
        "internal_uuid": str(uuid.UUID(bytes=sb.uuid)),
        "label": sb.label_str,
        "seq": sb.seq,
        "created": _time(sb.created_ns),
        "created_ns": sb.created_ns,
        "last_write": _time(sb.write_time_ns),
        "last_write_ns": sb.write_time_ns,
        "clean": sb.is_clean,
        "device_size": sb.device_size,
        "block_size": sb.block_size,
        "bucket_size": sb.bucket_size,
        "btree_node_size": sb.btree_node_size,
        "extent_max": sb.extent_max,
        "inline_data_max": sb.inline_data_max,
        "nbuckets": sb.nbuckets,
        "first_bucket": sb.first_bucket,
        "metadata_checksum": checksum_name(sb.csum_type),
        "data_checksum": checksum_name(sb.data_csum_type),
        "str_hash": _str_hash(sb.str_hash_type),
        "features_incompat": _flags(sb.features_incompat, FeatureIncompat),
        "features_ro_compat": _flags(sb.features_ro_compat, FeatureRoCompat),
        "features_compat": _flags(sb.features_compat, FeatureCompat),
        "flags": _flags(sb.flags, SbFlags),
        "journal_seq_reserved": sb.journal_seq_reserved,
        "layout": {"sb_max_size": sb.sb_max_size, "offsets": list(sb.offsets),
                   "copies": [{"offset": c.offset, "status": c.status, "seq": c.seq}
                              for c in rr.copies],
                   "read_from": sb.offset},
        "journal": {"buckets": list(sb.journal_buckets),
                    "size": len(sb.journal_buckets) * sb.bucket_size},
        "seq_blacklist": [{"start": s, "end": e} for s, e in sb.blacklist],
        "errors": [{"id": i, "name": BY_ID[i].name if i in BY_ID else f"unknown({i})",
                    "count": c, "last": _time(t)} for i, (c, t) in sorted(sb.errors.items())],
    }
    if sb.clean is not None:
        c = sb.clean
        roots = []
        for r in c.roots:
            entry = {"btree": _btree(r.btree_id), "level": r.level}
            try:
                from ..btree.ptr import decode_ptr

                p = decode_ptr(decode_keys(r.key)[0])
                entry.update(sector=p.sector, gen=p.gen, node_seq=f"{p.node_seq:016x}")
            except Exception as e:  # a damaged entry is shown, not fatal
                entry["invalid"] = str(e)
            roots.append(entry)
        out["clean_state"] = {"journal_seq": c.journal_seq, "journal_next": c.journal_next,
                              "btree_write_point": [c.btree_wp_bucket, c.btree_wp_used],
                              "data_write_point": [c.data_wp_bucket, c.data_wp_used],
                              "roots": roots}
    return out


def _btree(b: int) -> str:
    try:
        return BtreeId(b).name
    except ValueError:
        return f"btree{b}"


def super_to_text(rr: ReadResult) -> str:
    d = super_to_dict(rr)
    sb: Superblock = rr.sb
    rows = [
        ("Filesystem magic", "bfs"),
        ("Format version", f"{d['version']} (oldest on disk: {d['version_min']})"),
        ("UUID", d["uuid"]),
        ("Internal UUID", d["internal_uuid"]),
        ("Label", d["label"] or "(none)"),
        ("Created", d["created"]),
        ("Last write", d["last_write"]),
        ("Superblock seq", str(d["seq"])),
        ("State", "clean" if d["clean"] else "not clean (journal replay needed)"),
        ("Device size", f"{_human(sb.device_size)} ({sb.device_size} bytes)"),
        ("Block size", _human(sb.block_size)),
        ("Bucket size", _human(sb.bucket_size)),
        ("Btree node size", _human(sb.btree_node_size)),
        ("Buckets", f"{sb.nbuckets} (first usable {sb.first_bucket})"),
        ("Largest extent", _human(sb.extent_max)),
        ("Inline data up to", _human(sb.inline_data_max)),
        ("Metadata checksum", d["metadata_checksum"]),
        ("Data checksum", d["data_checksum"]),
        ("String hash", d["str_hash"]),
        ("Incompat features", ", ".join(d["features_incompat"]) or "none"),
        ("Ro-compat features", ", ".join(d["features_ro_compat"]) or "none"),
        ("Compat features", ", ".join(d["features_compat"]) or "none"),
        ("Flags", ", ".join(d["flags"]) or "none"),
        ("Journal", f"{len(sb.journal_buckets)} buckets, {_human(d['journal']['size'])} "
                    f"(buckets {_ranges(sb.journal_buckets)})"),
        ("Journal seqs reserved", f"up to {sb.journal_seq_reserved}"),
        ("Seq blacklist", ", ".join(f"{s}-{e}" for s, e in sb.blacklist) or "none"),
    ]
    copies = []
    for c in rr.copies:
        where = f"byte {c.offset} (sector {c.offset // SECTOR_SIZE})"
        copies.append(f"{where}: {c.status}" + (f", seq {c.seq}" if c.seq is not None else ""))
    rows.append(("Superblock copies", copies[0] if copies else "?"))
    for extra in copies[1:]:
        rows.append(("", extra))
    if rr.used_backup:
        rows.append(("Read from", f"backup copy at byte {sb.offset} (primary unusable)"))
    if "clean_state" in d:
        c = d["clean_state"]
        rows.append(("Clean journal seq", str(c["journal_seq"])))
        for r in c["roots"]:
            loc = (f"level {r['level']} sector {r['sector']} gen {r['gen']}"
                   if "sector" in r else r.get("invalid", "?"))
            rows.append((f"Root {r['btree']}", loc))
    if d["errors"]:
        for e in d["errors"]:
            rows.append((f"Errors {e['name']}", f"{e['count']} (last {e['last']})"))
    else:
        rows.append(("Fsck error history", "none"))
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{(k + ':') if k else '':<{width}}{v}" for k, v in rows) + "\n"


def _ranges(nums: list[int]) -> str:
    if not nums:
        return "none"
    out = []
    start = prev = nums[0]
    for n in nums[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(out)
