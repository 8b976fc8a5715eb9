"""Snapshot benchmarks (registered in bench/run.py as `snapshots`).

1. `bfs snapshot create` of a subvolume holding 10 files vs 100,000 files: the
   same cost (O(1): two snapshot keys, two subvolume keys, one dirent, nothing
   copied). Whole process, and the create_snapshot call alone in-process.
   Beside it, `btrfs subvolume snapshot` of a loop-mounted btrfs image holding
   the same trees (root and btrfs-progs only; skipped otherwise).
2. Reading a 32 MiB file through d levels of snapshots (each a snapshot of the
   one before) with k 4 KiB ranges overwritten, spread over the levels: read
   from the deepest snapshot, `bfs cat` whole process and in-process MB/s.
3. `bfs snapshot delete` of an unchanged snapshot of both trees (the cleanup
   scans every key of the snapshot btrees, as bcachefs' delete_dead_snapshots).

    python bench/run.py --only snapshots
    python bench/snapshot_bench.py            # the same, standalone
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

FILE_MIB = 32
READ_CASES = [(0, 0), (0, 1), (100, 1), (1000, 1), (100, 10), (1000, 10), (1000, 50)]


def _tree(root: Path, nfiles: int) -> Path:
    """A host tree of nfiles small files (1000 per directory)."""
    if root.exists():
        return root
    tmp = root.with_name(root.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(nfiles):
        d = tmp / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir()
        (d / f"f{i % 1000:04d}").write_bytes(b"file %d\n" % i)
    tmp.rename(root)
    return root


def _bfs_image(h, work: Path, tree: Path, name: str) -> Path:
    img = work / name
    subprocess.run([h.BFS, "format", str(img), "--size", "2G", "--force", "--source", str(tree)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return img


def _timed(h, cmds: list[list[str]], prepare=None):
    """One warm-up, then each of cmds[1:] once (distinct commands: new names)."""
    times, peak, rc = [], 0, 0
    for i, cmd in enumerate(cmds):
        if prepare is not None:
            prepare(i)
        dt, rss, rc = h.run_once(cmd)
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {rc}")
        if i == 0:
            continue
        times.append(dt)
        peak = max(peak, rss)
    return h.Timing(times, peak, rc)


def _in_process_create(img: Path, runs: int) -> float:
    """Median seconds of create_snapshot + commit alone (image already open)."""
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.snapshots.subvolume import create_snapshot, delete_subvolume

    times = []
    with Filesystem.open(str(img), write=True) as fs:
        for i in range(runs):
            t = time.perf_counter()
            create_snapshot(fs, "/", f"/inproc{i}")
            fs.store.commit()
            times.append(time.perf_counter() - t)
        for i in range(runs):
            delete_subvolume(fs, f"/inproc{i}")
    return statistics.median(times)


class Btrfs:
    """A loop-mounted btrfs image with a subvolume `src` holding a tree."""

    def __init__(self, work: Path, tree: Path, name: str):
        self.img = work / f"{name}.btrfs"
        self.mnt = work / f"{name}.mnt"
        self.mounted = False
        with open(self.img, "wb") as f:
            f.truncate(2 << 30)
        subprocess.run(["mkfs.btrfs", "-f", "-q", str(self.img)], check=True,
                       stdout=subprocess.DEVNULL)
        self.mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(self.img), str(self.mnt)], check=True,
                       capture_output=True)
        self.mounted = True
        subprocess.run(["btrfs", "-q", "subvolume", "create", str(self.mnt / "src")],
                       check=True)
        subprocess.run(["cp", "-a", f"{tree}/.", str(self.mnt / "src")], check=True)
        subprocess.run(["sync", "-f", str(self.mnt)], check=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mnt)], capture_output=True)
            self.mounted = False
        self.img.unlink(missing_ok=True)


def btrfs_usable() -> str | None:
    """Why btrfs cannot be compared here (None: it can)."""
    if os.geteuid() != 0:
        return "btrfs comparison needs root (loop mount)"
    for tool in ("mkfs.btrfs", "btrfs", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"btrfs comparison needs {tool}"
    if not os.path.exists("/dev/loop-control"):
        return "btrfs comparison needs loop devices"
    return None


def create_rows(h, work: Path, runs: int) -> list:
    rows = []
    why_not = btrfs_usable()
    for nfiles in (10, 100_000):
        tree = _tree(work / f"tree{nfiles}", nfiles)
        img = _bfs_image(h, work, tree, f"snap{nfiles}.img")
        cmds = [[h.BFS, "snapshot", "create", str(img), "/", f"/s{i}"] for i in range(runs + 1)]
        row = h.Row("snapshots", f"snapshot create, {nfiles:,} files", _timed(h, cmds))
        inproc = _in_process_create(img, max(runs, 3))
        notes = [f"in-process create_snapshot+commit {inproc * 1000:.2f} ms"]
        dels = [[h.BFS, "snapshot", "delete", str(img), f"/s{i}"] for i in range(runs + 1)]
        t_del = _timed(h, dels)
        notes.append(f"bfs snapshot delete (unchanged snapshot) {h.fmt_time(t_del.median)}")
        if why_not is None:
            fs = None
            try:
                fs = Btrfs(work, tree, f"b{nfiles}")
                snap = [["btrfs", "-q", "subvolume", "snapshot", str(fs.mnt / "src"),
                         str(fs.mnt / f"s{i}")] for i in range(runs + 1)]
                row.peers["btrfs subvolume snapshot"] = _timed(h, snap)
                dels = [["btrfs", "-q", "subvolume", "delete", "-c", str(fs.mnt / f"s{i}")]
                        for i in range(runs + 1)]
                notes.append("btrfs subvolume delete -c "
                             f"{h.fmt_time(_timed(h, dels).median)}")
            except (subprocess.CalledProcessError, OSError) as e:
                notes.append(f"btrfs skipped: {e}")
            finally:
                if fs is not None:
                    fs.close()
        else:
            notes.append(why_not)
        row.note = "; ".join(notes)
        rows.append(row)
        img.unlink(missing_ok=True)
    return rows


def _layered_image(h, work: Path, k: int, d: int) -> tuple[Path, str]:
    """A 32 MiB file, then d snapshots each of the one before, k 4 KiB overwrites
    spread over the levels (in each new snapshot). Returns (image, path to read)."""
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.snapshots.subvolume import create_snapshot

    img = work / f"read-k{k}-d{d}.img"
    # the installed bfs: `python -m bfs_tools` run from a checkout would import the
    # source tree, which has no bfs_tools.formats (installed from formats/)
    subprocess.run([h.BFS, "format", str(img), "--size", "1G", "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    rng = random.Random(k * 1000 + d)
    size = FILE_MIB << 20
    with Filesystem.open(str(img), write=True) as fs:
        root = fs.root()
        w = fs.create(root, b"f", 0o100644)
        chunk = rng.randbytes(1 << 20)
        for off in range(0, size, 1 << 20):
            fs.write(w, off, chunk, "f")
        fs.create(root, b"snaps", 0o40755)
        src, path = "/", "/f"
        for level in range(d):
            dst = f"/snaps/l{level}"
            create_snapshot(fs, src, dst)
            src, path = dst, f"{dst}/f"
            where = fs.resolve(path).where
            n = k // d + (1 if level < k % d else 0)
            for _ in range(n):
                off = rng.randrange(size // 4096) * 4096
                fs.write(where, off, rng.randbytes(4096), path)
            fs.store.commit()
    return img, path


def _in_process_read(img: Path, path: str) -> float:
    from bfs_tools.fs.filesystem import Filesystem

    with Filesystem.open(str(img)) as fs:
        r = fs.resolve(path)
        t = time.perf_counter()
        n = sum(len(c) for c in fs.iter_read(r.where, r.inode, path))
        dt = time.perf_counter() - t
    assert n == FILE_MIB << 20
    return dt


def read_rows(h, work: Path, runs: int) -> list:
    rows = []
    for k, d in READ_CASES:
        img, path = _layered_image(h, work, k, d)
        t = h.measure(f"{h.BFS} cat {img} {path} > /dev/null", runs=runs, shell=True)
        inproc = min(_in_process_read(img, path) for _ in range(3))
        mb = FILE_MIB * (1 << 20) / 1e6
        row = h.Row("snapshots", f"read {FILE_MIB} MiB, {k} overwrites over {d} levels", t,
                    note=f"bfs cat {mb / t.median:.0f} MB/s whole process; in-process "
                         f"read {mb / inproc:.0f} MB/s")
        rows.append(row)
        img.unlink(missing_ok=True)
    return rows


def run(work: Path, runs: int, h) -> list:
    """h: the bench/run.py module (Row, Timing, measure, run_once, fmt_time, BFS)."""
    return create_rows(h, work, runs) + read_rows(h, work, runs)


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run as harness

    w = Path(tempfile.mkdtemp(prefix="bfs-snapbench-"))
    try:
        print(harness.render(run(w, int(os.environ.get("RUNS", "5")), harness)))
    finally:
        shutil.rmtree(w, ignore_errors=True)
