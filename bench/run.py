"""`make bench`: bfs and the peer tools side by side, one run, one markdown table.

Every row times whole processes (fork+exec included) the same way for bfs and
for the peers: one warm-up run, then N timed runs; the table shows medians,
the ratio bfs/peer (below 1: bfs is faster) and the peak RSS of the bfs process.
Images live in a temporary directory that is removed at the end.

    python bench/run.py                 # everything
    python bench/run.py --only format   # benchmarks whose name contains "format"
    python bench/run.py --runs 3        # fewer timed runs
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BFS = str(Path(sys.executable).parent / "bfs")
PEER_PACKAGES = {"mkfs.btrfs": "btrfs-progs", "mkfs.xfs": "xfsprogs", "hyperfine": "hyperfine"}


@dataclass
class Timing:
    times: list[float]
    peak_kib: int
    rc: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Row:
    bench: str
    what: str
    ours: Timing | None
    peers: dict[str, Timing] = field(default_factory=dict)
    note: str = ""


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_once(cmd: list[str] | str, *, shell: bool = False, env=None) -> tuple[float, int, int]:
    """(seconds, peak RSS KiB, rc) of one whole process.

    The peak RSS comes from GNU time when it is there: a process forked from this
    one would report this process's RSS at the fork (Linux keeps the high-water
    mark of the replaced memory map across exec), and the benchmarks run large
    in-process parts."""
    argv = ["sh", "-c", cmd] if shell else list(cmd)
    rss_file = None
    if GNU_TIME:
        fd, rss_file = tempfile.mkstemp(prefix="bfs-bench-rss-")
        os.close(fd)
        argv = [GNU_TIME, "-f", "%M", "-o", rss_file, *argv]
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    rc = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss
    if rss_file:
        try:
            with open(rss_file) as f:
                lines = f.read().split()
            peak = int(lines[-1]) if lines else 0
        except (OSError, ValueError):
            peak = 0
        finally:
            os.unlink(rss_file)
    return dt, peak, rc


def measure(cmd, *, runs: int, prepare=None, shell: bool = False, warmup: bool = True) -> Timing:
    times, peak, rc = [], 0, 0
    for i in range(runs + (1 if warmup else 0)):
        if prepare is not None:
            prepare()
        dt, rss, rc = run_once(cmd, shell=shell)
        if warmup and i == 0:
            continue
        times.append(dt)
        peak = max(peak, rss)
    return Timing(times, peak, rc)


def fmt_time(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def ensure_peer_tools() -> list[str]:
    """Install missing peer tools with apt-get when root. Returns what is missing."""
    missing = [tool for tool in PEER_PACKAGES if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        pkgs = sorted({PEER_PACKAGES[t] for t in missing})
        subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        missing = [tool for tool in PEER_PACKAGES if shutil.which(tool) is None]
    return missing


BENCHES = []


def bench(fn):
    BENCHES.append(fn)
    return fn


def sparse(path: Path, size: int) -> None:
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)


@bench
def format_sizes(work: Path, runs: int) -> list[Row]:
    rows = []
    sizes = [("1G", 1 << 30), ("100G", 100 << 30), ("16T", (16 << 40) - 4096)]
    img = work / "fmt.img"
    for label, size in sizes:
        row = Row("format", f"format {label} sparse", None)
        row.ours = measure([BFS, "format", str(img), "--force"], runs=runs,
                           prepare=lambda s=size: sparse(img, s))
        notes = [f"bfs alloc {allocated(img) / 2**20:.1f} MiB"]
        for peer, cmd in (("mkfs.ext4", ["mkfs.ext4", "-F", "-q", str(img)]),
                          ("mkfs.btrfs", ["mkfs.btrfs", "-f", "-q", str(img)]),
                          ("mkfs.xfs", ["mkfs.xfs", "-f", "-q", str(img)])):
            if shutil.which(cmd[0]) is None:
                continue
            row.peers[peer] = measure(cmd, runs=runs, prepare=lambda s=size: sparse(img, s))
            notes.append(f"{peer} alloc {allocated(img) / 2**20:.1f} MiB")
        row.note = "; ".join(notes)
        rows.append(row)
    img.unlink(missing_ok=True)
    return rows


@bench
def startup(work: Path, runs: int) -> list[Row]:
    img = work / "start.img"
    subprocess.run([BFS, "format", str(img), "--size", "1G"], check=True,
                   stdout=subprocess.DEVNULL)
    rows = [Row("startup", "bfs --help", measure([BFS, "--help"], runs=runs)),
            Row("startup", "bfs dump super", measure([BFS, "dump", "super", str(img)], runs=runs),
                note="goal < 150 ms whole process")]
    if shutil.which("dumpe2fs"):
        ext = work / "start.ext4"
        sparse(ext, 1 << 30)
        subprocess.run(["mkfs.ext4", "-F", "-q", str(ext)], check=True)
        rows[1].peers["dumpe2fs -h"] = measure(["dumpe2fs", "-h", str(ext)], runs=runs)
    return rows


@bench
def codec(work: Path, runs: int) -> list[Row]:
    sys.path.insert(0, str(HERE))
    import codec_bench

    rows = []
    for r in codec_bench.run():
        rows.append(Row("codec", r["codec"], None, note=f"{r['keys_per_s']:,.0f} keys/s"))
    return rows


@bench
def fs(work: Path, runs: int) -> list[Row]:
    sys.path.insert(0, str(HERE))
    import fs_bench

    return fs_bench.run(work, runs, Row, measure, sparse, fmt_time)


@bench
def reflink(work: Path, runs: int) -> list[Row]:
    sys.path.insert(0, str(HERE))
    import reflink_bench

    return reflink_bench.run(work, runs, Row, Timing, run_once)


@bench
def engine(work: Path, runs: int) -> list[Row]:
    sys.path.insert(0, str(HERE))
    import engine_bench

    return engine_bench.run(work, runs, Row, Timing)


@bench
def snapshots(work: Path, runs: int) -> list[Row]:
    sys.path.insert(0, str(HERE))
    import snapshot_bench

    return snapshot_bench.run(work, runs, sys.modules[__name__])


@bench
def check(work: Path, runs: int) -> list[Row]:
    sys.path.insert(0, str(HERE))
    import check_bench

    return check_bench.run(work, runs, sys.modules[__name__])


@bench
def open_cost(work: Path, runs: int) -> list[Row]:
    """Opening reads the superblock, the journal position and the roots, never all
    metadata: `df` and `ls /` cost the same on 100,000 files as on an empty image."""
    sys.path.insert(0, str(HERE))
    import fs_bench

    tree = fs_bench.small_files_tree(work)
    full, empty = work / "open-full.img", work / "open-empty.img"
    for img, src in ((full, tree), (empty, None)):
        cmd = [BFS, "format", str(img), "--size", "2G", "--force"]
        subprocess.run(cmd + (["--source", str(src)] if src else []), check=True,
                       stdout=subprocess.DEVNULL)
    rows = []
    for what, args in (("df", ["df"]), ("ls /", ["ls"])):
        t_full = measure([BFS, *args, str(full)], runs=max(runs, 10))
        t_empty = measure([BFS, *args, str(empty)], runs=max(runs, 10))
        rows.append(Row("open", f"bfs {what}: 100,000-file image vs empty", t_full,
                        {"bfs, empty image": t_empty},
                        note="goal: ratio within 1.10"))
    return rows


def render(rows: list[Row]) -> str:
    out = ["| benchmark | bfs (median) | peer | peer (median) | ratio bfs/peer | bfs peak RSS | notes |",
           "|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        ours = fmt_time(r.ours.median) if r.ours else ""
        rss = f"{r.ours.peak_kib / 1024:.0f} MiB" if r.ours else ""
        if r.ours and r.ours.rc != 0:
            ours += f" (rc {r.ours.rc})"
        if not r.peers:
            out.append(f"| {r.what} | {ours} | | | | {rss} | {r.note} |")
            continue
        for i, (peer, t) in enumerate(r.peers.items()):
            ratio = f"{r.ours.median / t.median:.2f}" if r.ours and t.median else ""
            out.append(f"| {r.what if i == 0 else ''} | {ours if i == 0 else ''} | {peer} | "
                       f"{fmt_time(t.median)} | {ratio} | {rss if i == 0 else ''} | "
                       f"{r.note if i == 0 else ''} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run benchmarks whose name contains this")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to put the temporary images")
    args = ap.parse_args()
    missing = ensure_peer_tools()
    if missing:
        print(f"note: peer tools not available: {', '.join(missing)}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bfs-bench-", dir=args.dir))
    rows: list[Row] = []
    try:
        for fn in BENCHES:
            if args.only and args.only not in fn.__name__:
                continue
            print(f"running {fn.__name__} ...", file=sys.stderr)
            try:
                rows += fn(work, args.runs)
            except Exception as e:  # noqa: BLE001 - one broken benchmark must not lose the table
                print(f"  {fn.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
                rows.append(Row(fn.__name__, f"{fn.__name__}: FAILED", None,
                                note=f"{type(e).__name__}: {e}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbfs-tools benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, median of {args.runs} runs after 1 warm-up, bfs on "
          f"Python {platform.python_version()} ({sys.base_prefix})\n")
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
