"""`bfs check -n` against the peer checkers, side by side on the same content.

Two trees: the Python standard library (without site-packages, ~7,700 files)
and a generated tree of 100,000 small files (100 directories of 1,000 files of
0..3,000 bytes). Each tree is put into one image per filesystem without a
mount: `bfs format --source`, `mke2fs -d`, `mkfs.btrfs --rootdir`, and
`mkfs.xfs -p` with a prototype file (xfs_repair is skipped, with a note, when
mkfs.xfs cannot do that). Then whole-process time (median) and peak memory of
`bfs check -n`, `e2fsck -fn`, `btrfs check --readonly` and `xfs_repair -n`.

bfs runs as an installed tool does, from bytecode: with PYTHONDONTWRITEBYTECODE
set (as in some dev shells) and an editable install, every run would compile
all its modules again (~0.1 s); here the warm-up run writes the bytecode into
the work directory (PYTHONPYCACHEPREFIX) and the timed runs use it.

    python bench/run.py --only check
    python bench/check_bench.py --profile IMAGE     # where bfs check spends its time
    python bench/check_bench.py --passes IMAGE [RUNS]   # CPU time of each pass
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from inputs import stdlib_copy

FILES = 100_000
DIRS = 100


def small_files_tree(work: Path) -> Path:
    dest = work / "small-files"
    if dest.exists():
        return dest
    rng = random.Random(1)
    for d in range(DIRS):
        dp = dest / f"d{d:03d}"
        dp.mkdir(parents=True)
        for f in range(FILES // DIRS):
            size = rng.choice([0, 10, 100, 500, 1000, 3000])
            (dp / f"f{f:04d}").write_bytes(os.urandom(size) if size > 1000 else b"x" * size)
    return dest


def tree_bytes(tree: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(tree):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def protofile(tree: Path, dest: Path) -> Path:
    """An xfs prototype file describing `tree` (regular files, dirs, symlinks)."""
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        for e in sorted(d.iterdir()):
            name = e.name
            if " " in name or not name.isprintable():
                continue
            pad = " " * depth
            if e.is_symlink():
                lines.append(f"{pad}{name} l--777 0 0 {os.readlink(e)}")
            elif e.is_dir():
                lines.append(f"{pad}{name} d--755 0 0")
                walk(e, depth + 1)
                lines.append(f"{pad}$")
            elif e.is_file():
                lines.append(f"{pad}{name} ---644 0 0 {e}")
    walk(tree, 1)
    lines.append("$")
    dest.write_text("\n".join(lines) + "\n")
    return dest


def images(work: Path, tree: Path, label: str, bfs: str) -> dict[str, tuple[Path, str]]:
    """label -> (image, note) for every filesystem that could be populated."""
    size = max(1 << 30, (tree_bytes(tree) * 3) // (1 << 20) << 20)
    nfiles = sum(len(f) + len(d) for _r, d, f in os.walk(tree))
    out = {}

    def sparse(p: Path) -> Path:
        if p.exists():
            p.unlink()
        with open(p, "wb") as f:
            f.truncate(size)
        return p

    img = work / f"{label}.bfs"
    if img.exists():
        img.unlink()
    subprocess.run([bfs, "format", str(img), "--size", str(size), "--source", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    out["bfs"] = (img, "")
    if shutil.which("mke2fs"):
        p = sparse(work / f"{label}.ext4")
        r = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-N", str(nfiles * 2 + 1024),
                            "-d", str(tree), str(p)], capture_output=True)
        if r.returncode == 0:
            out["ext4"] = (p, "")
    if shutil.which("mkfs.btrfs"):
        p = sparse(work / f"{label}.btrfs")
        r = subprocess.run(["mkfs.btrfs", "-q", "-f", "--rootdir", str(tree), str(p)],
                           capture_output=True)
        if r.returncode == 0:
            out["btrfs"] = (p, "")
    if shutil.which("mkfs.xfs"):
        p = sparse(work / f"{label}.xfs")
        proto = protofile(tree, work / f"{label}.proto")
        r = subprocess.run(["mkfs.xfs", "-q", "-f", "-p", str(proto), str(p)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            out["xfs"] = (p, "")
        else:
            out["xfs"] = (None, "xfs skipped: mkfs.xfs -p could not populate the image "
                                f"({r.stderr.strip().splitlines()[-1:] or r.returncode})")
    return out


def run(work: Path, runs: int, bench) -> list:
    bfs = bench.BFS
    rows = []
    for label, make in (("stdlib", stdlib_copy), ("100k-files", small_files_tree)):
        tree = make(work)
        imgs = images(work, tree, label, bfs)
        nfiles = sum(len(f) for _r, _d, f in os.walk(tree))
        img, _ = imgs["bfs"]
        as_installed = ["env", "-u", "PYTHONDONTWRITEBYTECODE",
                        f"PYTHONPYCACHEPREFIX={work / 'pycache'}"]
        row = bench.Row("check", f"check -n, {label} ({nfiles} files)",
                        bench.measure([*as_installed, bfs, "check", "-n", str(img)], runs=runs))
        notes = [f"bfs peak {row.ours.peak_kib / 1024:.0f} MiB"]
        peers = {"ext4": ("e2fsck -fn", ["e2fsck", "-fn"]),
                 "btrfs": ("btrfs check --readonly", ["btrfs", "check", "--readonly"]),
                 "xfs": ("xfs_repair -n", ["xfs_repair", "-n", "-f"])}
        for fs, (name, cmd) in peers.items():
            got = imgs.get(fs)
            if got is None:
                continue
            p, note = got
            if p is None:
                notes.append(note)
                continue
            t = bench.measure(cmd + [str(p)], runs=runs)
            row.peers[name] = t
            notes.append(f"{name} peak {t.peak_kib / 1024:.0f} MiB"
                         + (f" (rc {t.rc})" if t.rc else ""))
        row.note = "; ".join(notes)
        rows.append(row)
        for p, _note in imgs.values():
            if p is not None:
                p.unlink(missing_ok=True)
    return rows


def profile(image: str) -> None:
    """cProfile of `bfs check -n IMAGE`: the passes, then the hottest functions.
    (run_check, as the executable runs it: without click; the collector off as in
    cli/entry.py)"""
    import cProfile
    import gc
    import pstats

    from bfs_tools.cli.check_run import run_check

    gc.disable()
    prof = cProfile.Profile()
    prof.enable()
    run_check(image, "no", verbose=True)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def pass_times(image: str, runs: int = 10) -> None:
    """CPU time (process_time) of opening IMAGE, of each pass of `check -n` and of
    finish(): the least of `runs` in-process runs, the collector off. (Steadier
    than wall time on a loaded machine: compare before and after on one load.)"""
    import gc
    import time

    from bfs_tools.fsck import runner
    from bfs_tools.fsck.context import CheckContext

    gc.disable()
    best: dict[str, float] = {}

    def keep(name: str, secs: float) -> None:
        best[name] = min(best.get(name, secs), secs)

    def timed(name, fn):
        def run(ctx) -> None:
            t = time.process_time()
            fn(ctx)
            keep(name, time.process_time() - t)
        return run

    passes = runner.PASSES
    runner.PASSES = [(pid, name, timed(name, fn)) for pid, name, fn in passes]
    try:
        for _ in range(runs):
            t = time.process_time()
            store = runner.open_for_check(image, "no")
            keep("open", time.process_time() - t)
            ctx = CheckContext(store, "no")
            runner.run_passes(ctx)
            t = time.process_time()
            runner.finish(ctx)
            keep("finish (release)", time.process_time() - t)
    finally:
        runner.PASSES = passes
    print(f"{image}: least CPU time of {runs} runs")
    for name, secs in best.items():
        print(f"  {name:20s} {secs * 1000:8.1f} ms")
    print(f"  {'sum':20s} {sum(best.values()) * 1000:8.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--profile":
        profile(sys.argv[2])
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "--passes":
        pass_times(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 10)
    else:
        print(__doc__)
