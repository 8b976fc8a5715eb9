"""`dump alloc`: the persistent allocation state.

Per bucket in use (alloc btree): gen, data type, live sectors; the freespace
index as ranges; totals per data type computed from the alloc keys. On a
terminal, a compact coloured map of the device (one cell per bucket, or per
group of buckets on big devices).
"""

from __future__ import annotations

from ..alloc.alloc_key import decode_alloc
from ..alloc.freespace import free_ranges
from ..errors import FormatError
from ..formats.constants import SECTOR_SIZE
from ..formats.ids import BtreeId, DataType

# map cell symbol and colour per data type
SYMBOLS = {DataType.free: ".", DataType.superblock: "S", DataType.journal: "J",
           DataType.btree: "B", DataType.user: "U"}
STYLES = {DataType.free: "dim", DataType.superblock: "bold magenta",
          DataType.journal: "bold yellow", DataType.btree: "bold cyan",
          DataType.user: "bold green"}
UNKNOWN_SYMBOL = "?"


def data_type_name(t: int) -> str:
    try:
        return DataType(t).name
    except ValueError:
        return f"unknown({t})"


class BucketInfo:
    __slots__ = ("bucket", "gen", "data_type", "dirty_sectors", "invalid")

    def __init__(self, bucket: int, gen: int, data_type: int, dirty_sectors: int,
                 invalid: str | None = None):
        self.bucket = bucket
        self.gen = gen
        self.data_type = data_type
        self.dirty_sectors = dirty_sectors
        self.invalid = invalid


class AllocView:
    __slots__ = ("nbuckets", "bucket_size", "first_bucket", "buckets", "free")

    def __init__(self, nbuckets: int, bucket_size: int, first_bucket: int):
        self.nbuckets = nbuckets
        self.bucket_size = bucket_size
        self.first_bucket = first_bucket
        self.buckets: list[BucketInfo] = []
        self.free: list[tuple[int, int]] = []    # [start, end)

    @property
    def free_buckets(self) -> int:
        return sum(e - s for s, e in self.free)

    def totals(self) -> dict[str, dict[str, int]]:
        out = {t.name: {"buckets": 0, "sectors": 0} for t in DataType if t != DataType.free}
        for b in self.buckets:
            if b.data_type == DataType.free:
                continue
            t = out.setdefault(data_type_name(b.data_type), {"buckets": 0, "sectors": 0})
            t["buckets"] += 1
            t["sectors"] += b.dirty_sectors
        return out


def alloc_view(store) -> AllocView:
    sb = store.sb
    view = AllocView(sb.nbuckets, sb.bucket_size, sb.first_bucket)
    for k in store.btrees.iter(BtreeId.alloc):
        try:
            a = decode_alloc(k)
            view.buckets.append(BucketInfo(k.pos[1], a.gen, a.data_type, a.dirty_sectors))
        except FormatError as e:
            view.buckets.append(BucketInfo(k.pos[1], 0, -1, 0, str(e)))
    view.free = list(free_ranges(store.btrees))
    return view


def alloc_to_dict(view: AllocView) -> dict:
    totals = view.totals()
    used = sum(t["buckets"] for t in totals.values())
    buckets = []
    for b in view.buckets:
        d = {"bucket": b.bucket, "gen": b.gen, "data_type": data_type_name(b.data_type),
             "dirty_sectors": b.dirty_sectors}
        if b.invalid:
            d["invalid"] = b.invalid
        buckets.append(d)
    return {
        "buckets": buckets,
        "free_ranges": [{"start": s, "end": e - 1, "buckets": e - s} for s, e in view.free],
        "summary": {
            "nbuckets": view.nbuckets,
            "bucket_size": view.bucket_size,
            "first_bucket": view.first_bucket,
            "used_buckets": used,
            "free_buckets": view.free_buckets,
            "data_types": totals,
        },
    }


def _human(n: int) -> str:
    from ..cli.output import human

    return human(n)


def alloc_lines(view: AllocView):
    yield (f"{view.nbuckets} buckets of {_human(view.bucket_size)} "
           f"(first usable {view.first_bucket})")
    yield ""
    yield f"{'bucket':>10} {'gen':>4} {'data_type':<11} {'dirty_sectors':>13}"
    for b in view.buckets:
        line = (f"{b.bucket:>10} {b.gen:>4} {data_type_name(b.data_type):<11} "
                f"{b.dirty_sectors:>13}")
        if b.invalid:
            line += f"  <invalid: {b.invalid}>"
        yield line
    yield ""
    yield f"free ranges ({len(view.free)}):"
    for s, e in view.free:
        yield f"  {s}..{e - 1} ({e - s} buckets)"
    yield ""
    yield f"{'data type':<11} {'buckets':>10} {'sectors':>14} {'live data':>12}"
    totals = view.totals()
    for name, t in totals.items():
        yield (f"{name:<11} {t['buckets']:>10} {t['sectors']:>14} "
               f"{_human(t['sectors'] * SECTOR_SIZE):>12}")
    yield f"{'free':<11} {view.free_buckets:>10}"
    yield f"{'total':<11} {view.nbuckets:>10}"


# ---------------------------------------------------------------------------- map


def map_cells(view: AllocView, max_cells: int) -> tuple[int, list[tuple[int, bool]]]:
    """(buckets per cell, [(data type, whole cell used) per cell]).

    A cell shows the most common non-free data type of its buckets (-1 for an
    unknown type); `whole` is False when some of its buckets are free.
    """
    per = max(1, -(-view.nbuckets // max(1, max_cells)))
    ncells = -(-view.nbuckets // per)
    counts: list[dict[int, int] | None] = [None] * ncells
    for b in view.buckets:
        if b.data_type == DataType.free or not 0 <= b.bucket < view.nbuckets:
            continue
        c = counts[b.bucket // per]
        if c is None:
            c = counts[b.bucket // per] = {}
        t = b.data_type if b.data_type in SYMBOLS else -1
        c[t] = c.get(t, 0) + 1
    cells = []
    for i, c in enumerate(counts):
        if not c:
            cells.append((DataType.free, True))
            continue
        size = min(per, view.nbuckets - i * per)
        t = max(c, key=lambda k: (c[k], -k))
        cells.append((t, sum(c.values()) == size))
    return per, cells


def bucket_map(view: AllocView, width: int = 80, max_rows: int = 16):
    """A rich Text: the bucket map and its legend."""
    from rich.text import Text

    cols = max(16, min(128, width - 2))
    per, cells = map_cells(view, cols * max_rows)
    out = Text()
    unit = "bucket" if per == 1 else f"{per} buckets"
    out.append(f"bucket map (one cell = {unit})\n")
    for row in range(0, len(cells), cols):
        run, run_style = "", None
        for t, whole in cells[row:row + cols]:
            sym = SYMBOLS.get(t, UNKNOWN_SYMBOL)
            style = STYLES.get(t, "bold red")
            if style != run_style and run:
                out.append(run, style=run_style)
                run = ""
            run += sym if whole else sym.lower()
            run_style = style
        out.append(run + "\n", style=run_style)
    for t in (DataType.superblock, DataType.journal, DataType.btree, DataType.user,
              DataType.free):
        out.append(SYMBOLS[t], style=STYLES[t])
        out.append(f" {t.name}  ")
    if per > 1:
        out.append("(lower case: partly free)")
    out.append("\n")
    return out
