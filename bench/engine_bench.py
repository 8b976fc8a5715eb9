"""Storage-engine benchmarks, measured in-process on image files (no CLI):

  * keys inserted per second through transactions (100 keys each, random and
    sequential positions), the final close (every node written) included;
  * keys iterated per second, cold (fresh read-only open, every node read);
  * bulk load: keys per second through Btrees.bulk_build then store.close();
  * journal replay: an unclean image whose replay range is as large as the
    engine lets it grow (half of the journal ring: a bigger range makes the
    commit write the dirty nodes first), opened read-only;
  * open time (the whole Store.open: superblock, roots) of an image holding
    1M keys vs an empty one: it must not depend on how much metadata there is.

Keys are xattr keys (36-byte header + ~20-byte value) in the xattrs btree.
Registered in bench/run.py (`python bench/run.py --only engine`), or alone:

    python bench/engine_bench.py [--keys 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bfs_tools.formats.ids import BtreeId, KeyType

from bfs_tools.format import format_device, plan_geometry
from bfs_tools.io.device import FileDevice
from bfs_tools.keys import Key
from bfs_tools.store import Store

X = BtreeId.xattrs
IMAGE_SIZE = 4 << 30
BATCH = 100


def xkey(inode: int, i: int, payload: bytes = b"value-%08d") -> Key:
    name = f"n{i}".encode()
    value = payload % i if b"%" in payload else payload
    val = bytes([0, len(name)]) + len(value).to_bytes(2, "little") + name + value
    return Key((inode, i, 0), KeyType.xattr, val)


def new_image(path: Path, size: int = IMAGE_SIZE) -> None:
    if path.exists():
        path.unlink()
    dev = FileDevice(str(path), write=True, create_size=size)
    try:
        format_device(dev, plan_geometry(size))
    finally:
        dev.close()


def insert_rate(path: Path, n: int, positions: list[int]) -> float:
    new_image(path)
    t0 = time.perf_counter()
    s = Store.open(str(path), write=True)
    for b in range(0, n, BATCH):
        t = s.transaction()
        for i in positions[b:b + BATCH]:
            t.update(X, xkey(1, i))
        t.commit()
    s.close()
    return n / (time.perf_counter() - t0)


def iterate_rate(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    s = Store.open(str(path))
    n = sum(1 for _ in s.btrees.iter(X))
    s.close()
    return n / (time.perf_counter() - t0), n


def bulk_load(path: Path, n: int) -> float:
    new_image(path)
    keys = [xkey(1, i) for i in range(n)]
    t0 = time.perf_counter()
    s = Store.open(str(path), write=True)
    s.btrees.bulk_build(X, keys, s.journal.seq)
    s.close()
    return n / (time.perf_counter() - t0)


def replay(work: Path, runs: int) -> dict:
    """An unclean image with the largest replay range, and its read-only open."""
    path = work / "replay.img"
    new_image(path, 1 << 30)
    s = Store.open(str(path), write=True)
    half = s.journal_capacity() // 2
    rng = random.Random(1)
    start = s.journal.bytes_written
    i = 0
    # journalled overwrites of few leaves, until just under half of the ring
    while s.journal.bytes_written - start < half - 2 * s.sb.bucket_size:
        t = s.transaction()
        for _ in range(BATCH):
            t.update(X, xkey(2, rng.randrange(50_000), b"v" * 20))
            i += 1
        t.commit()
    s.commit()
    crashed = work / "replay-crashed.img"
    shutil.copyfile(path, crashed)     # the image as it is now: no close
    s.abort()
    times, replayed = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        r = Store.open(str(crashed))
        times.append(time.perf_counter() - t0)
        replayed = r.replayed_keys
        r.close()
    return {"time": statistics.median(times), "keys": replayed,
            "bytes": sum(j.length for j in r.journal_scan.jsets
                         if j.seq >= r.journal_scan.jsets[0].seq),
            "ring": s.journal_capacity()}


def open_time(path: Path, runs: int) -> tuple[list[float], int]:
    """Times of Store.open (after one warm-up), and the btree nodes it read."""
    times = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        s = Store.open(str(path))
        times.append(time.perf_counter() - t0)
        nodes = s.btrees.nodes_read
        s.close()
    return times[1:], nodes


def measure_all(work: Path, runs: int, nkeys: int) -> list[dict]:
    out = []
    img = work / "engine.img"
    n_ins = min(nkeys, 200_000)
    seq_rate = insert_rate(img, n_ins, list(range(n_ins)))
    out.append({"what": f"insert {n_ins:,} sequential keys, {BATCH}/transaction",
                "rate": seq_rate, "unit": "keys/s"})
    it_rate, n_it = iterate_rate(img)
    out.append({"what": f"iterate {n_it:,} keys (cold open)", "rate": it_rate, "unit": "keys/s"})
    positions = list(range(n_ins))
    random.Random(2).shuffle(positions)
    out.append({"what": f"insert {n_ins:,} random keys, {BATCH}/transaction",
                "rate": insert_rate(img, n_ins, positions), "unit": "keys/s"})
    out.append({"what": f"bulk load {nkeys:,} keys (bulk_build + close)",
                "rate": bulk_load(img, nkeys), "unit": "keys/s"})
    it_rate, n_it = iterate_rate(img)
    out.append({"what": f"iterate {n_it:,} keys (cold open)", "rate": it_rate, "unit": "keys/s"})
    full, full_nodes = open_time(img, max(runs, 10))
    empty_img = work / "empty.img"
    new_image(empty_img)
    empty, empty_nodes = open_time(empty_img, max(runs, 10))
    out.append({"what": f"Store.open, {nkeys:,} keys", "times": full, "nodes": full_nodes})
    out.append({"what": "Store.open, empty image", "times": empty, "nodes": empty_nodes,
                "ratio": statistics.median(full) / statistics.median(empty)})
    r = replay(work, runs)
    out.append({"what": f"journal replay: {r['keys']:,} keys, "
                        f"{r['bytes'] / 2**20:.1f} MiB of a {r['ring'] / 2**20:.0f} MiB ring",
                "times": [r["time"]], "rate": r["keys"] / r["time"], "unit": "keys/s"})
    for p in work.glob("*.img"):
        p.unlink()
    return out


def run(work: Path, runs: int, Row, Timing, nkeys: int = 1_000_000) -> list:
    """Rows for bench/run.py: throughputs in the notes, times as medians."""
    results = measure_all(work, runs, nkeys)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # of this (in-process) bench
    rows = []
    for r in results:
        note = f"{r['rate']:,.0f} {r['unit']}" if "rate" in r else ""
        if "nodes" in r:
            note = f"{r['nodes']} btree nodes read (superblock, roots)"
        if "ratio" in r:
            note += f"; {nkeys:,} keys / empty = {r['ratio']:.2f}"
        timing = Timing(r["times"], peak, 0) if "times" in r else None
        rows.append(Row("engine", r["what"], timing, note=note))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bfs-engine-bench-", dir=args.dir))
    try:
        for r in measure_all(work, args.runs, args.keys):
            line = f"{r['what']:60s}"
            if "times" in r:
                line += f" {statistics.median(r['times']) * 1000:9.1f} ms"
            if "rate" in r:
                line += f" {r['rate']:>12,.0f} {r['unit']}"
            if "nodes" in r:
                line += f"  {r['nodes']} nodes read"
            if "ratio" in r:
                line += f"  (1M/empty = {r['ratio']:.2f})"
            print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
