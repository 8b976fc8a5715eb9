"""File-level benchmarks, bfs and the peers side by side on the same input:

  * populate: `bfs format --source` vs `mke2fs -t ext4 -d` vs `mkfs.btrfs --rootdir`,
    on a copy of this machine's Python standard library (site-packages excluded)
    and on a generated tree of 100,000 small files;
  * extract: `bfs get -r` of the whole tree vs `debugfs -R "rdump / DIR"` on the
    ext4 image;
  * read bandwidth: `bfs cat` of a 1 GiB file vs `dd` reading the host copy (both
    from the page cache).

Registered in bench/run.py (`python bench/run.py --only fs`); run alone for a
cProfile of one populate, or of one `get -r` of a bfs image:

    python bench/fs_bench.py --profile [SOURCE_DIR]
    python bench/fs_bench.py --profile-get IMAGE [DEST_PARENT]

and the `get -r` row alone, for images already built (IMAGE: bfs, EXT4: ext4 of
the same tree), extracting into a temporary directory in DEST_PARENT:

    python bench/fs_bench.py --get-row IMAGE EXT4 [DEST_PARENT [RUNS]]

(DEST_PARENT: where the tree is extracted, default a temporary directory; on
an ext4 host that has just deleted a tree, file creation itself can cost
~300 us a file, for bfs and debugfs alike: extract into tmpfs, e.g. /dev/shm,
to see bfs's own cost.)
"""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from inputs import stdlib_copy

HERE = Path(__file__).resolve().parent
BFS = str(Path(sys.executable).parent / "bfs")
SMALL_FILES = 100_000
BIG = 1 << 30


def small_files_tree(work: Path, n: int = SMALL_FILES) -> Path:
    """n small files (0..2 KiB) in n/1000 directories of 1000."""
    dst = work / "small"
    if not dst.exists():
        rnd = random.Random(1)
        blob = rnd.randbytes(4096)
        for i in range(n):
            d = dst / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
            size = rnd.randrange(0, 2048)
            with open(d / f"file-{i:06d}", "wb") as f:
                f.write(blob[:size])
    return dst


def big_file(work: Path) -> Path:
    p = work / "big.bin"
    if not p.exists():
        chunk = random.Random(2).randbytes(1 << 20)
        with open(p, "wb") as f:
            for i in range(BIG >> 20):
                f.write(chunk[i % 7:] + chunk[:i % 7])
    return p


def tree_stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            files += 1
            size += st.st_size
    return files, size


def _image_size(src_bytes: int, files: int) -> int:
    want = max(1 << 30, 3 * src_bytes + files * 8192)
    return -(-want // (1 << 20)) << 20


def run(work: Path, runs: int, Row, measure, sparse, fmt_time) -> list:
    rows = []
    for label, make in (("stdlib", stdlib_copy), (f"{SMALL_FILES // 1000}k small files",
                                                   small_files_tree)):
        print(f"  preparing {label} ...", file=sys.stderr)
        src = make(work)
        files, size = tree_stats(src)
        img_size = _image_size(size, files)
        n = max(1, min(runs, 3))
        bfs_img, ext_img, btr_img = work / "p.bfs", work / "p.ext4", work / "p.btrfs"
        what = f"populate {label} ({files:,} files, {size / 2**20:.0f} MiB)"
        row = Row("fs", what, measure([BFS, "format", str(bfs_img), "--force", "--source",
                                       str(src)], runs=n,
                                      prepare=lambda p=bfs_img, s=img_size: sparse(p, s)))
        inodes = str(files * 2 + 1000)
        if shutil.which("mke2fs"):
            row.peers["mke2fs -t ext4 -d"] = measure(
                ["mke2fs", "-q", "-F", "-t", "ext4", "-N", inodes, "-d", str(src), str(ext_img)],
                runs=n, prepare=lambda p=ext_img, s=img_size: sparse(p, s))
        if shutil.which("mkfs.btrfs"):
            row.peers["mkfs.btrfs --rootdir"] = measure(
                ["mkfs.btrfs", "-q", "-f", "--rootdir", str(src), str(btr_img)],
                runs=n, prepare=lambda p=btr_img, s=img_size: sparse(p, s))
        row.note = (f"image {img_size >> 20} MiB; bfs image allocates "
                    f"{bfs_img.stat().st_blocks * 512 / 2**20:.0f} MiB")
        rows.append(row)
        # extraction of the whole tree
        rows.append(get_row(label, bfs_img, ext_img, work / "out", n, Row, measure))
        for p in (bfs_img, ext_img, btr_img):
            p.unlink(missing_ok=True)
    # read bandwidth of one big file
    print("  preparing the 1 GiB file ...", file=sys.stderr)
    big = big_file(work)
    img = work / "cat.bfs"
    sparse(img, 2 * BIG + (256 << 20))
    subprocess.run([BFS, "format", str(img), "--force"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([BFS, "put", str(img), str(big), "/big"], check=True)
    empty = work / "empty"
    empty.write_bytes(b"")
    subprocess.run([BFS, "put", str(img), str(empty), "/empty"], check=True)
    n = max(1, min(runs, 3))
    ours = measure([BFS, "cat", str(img), "/big"], runs=n)
    dd = measure(["dd", f"if={big}", "of=/dev/null", "bs=4M", "status=none"], runs=n)
    start = measure([BFS, "cat", str(img), "/empty"], runs=n)   # process start, open, resolve
    row = Row("fs", "cat 1 GiB file", ours, {"dd bs=4M": dd})
    stream = max(ours.median - start.median, 1e-6)
    row.note = (f"bfs {BIG / ours.median / 2**20:,.0f} MiB/s, dd {BIG / dd.median / 2**20:,.0f} "
                f"MiB/s: {dd.median / ours.median:.0%} of dd (goal >= 80%); without the "
                f"{fmt_time(start.median)} start-up (cat of an empty file): "
                f"{BIG / stream / 2**20:,.0f} MiB/s, {dd.median / stream:.0%} of dd")
    rows.append(row)
    img.unlink(missing_ok=True)
    return rows


def get_row(label: str, bfs_img: Path, ext_img: Path, out: Path, runs: int, Row, measure):
    """`bfs get -r` of the whole tree vs `debugfs -R "rdump / OUT"`, interleaved run
    by run (the host's state, e.g. how recently ext4 freed inodes, drifts: both
    tools see the same drift), OUT removed the same way before each run, one
    warm-up round; the note gives each tool's median CPU (user/sys, children's
    rusage around each run), where the kernel's share of file creation shows."""
    def clean():
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)

    tools = {"bfs": ([BFS, "get", str(bfs_img), "/", str(out), "-r"], clean)}
    if shutil.which("debugfs") and ext_img.exists():
        def clean_mkdir():          # rdump extracts into an existing directory
            clean()
            out.mkdir()
        tools["debugfs rdump"] = (["debugfs", "-R", f"rdump / {out}", str(ext_img)],
                                  clean_mkdir)
    timings = {name: [] for name in tools}
    cpu = {name: [] for name in tools}
    for i in range(1 + runs):
        for name, (cmd, prepare) in tools.items():
            prepare()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = measure(cmd, runs=1, warmup=False)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:
                timings[name].append(t)
                cpu[name].append((after.ru_utime - before.ru_utime,
                                  after.ru_stime - before.ru_stime))
    clean()

    def merged(ts):
        return dataclasses.replace(ts[0], times=[x for t in ts for x in t.times],
                                   peak_kib=max(t.peak_kib for t in ts))

    row = Row("fs", f"get -r {label}", merged(timings["bfs"]))
    if "debugfs rdump" in tools:
        row.peers["debugfs rdump"] = merged(timings["debugfs rdump"])
    row.note = "; ".join(
        f"{name} CPU user {statistics.median(u for u, _ in c):.2f} s, "
        f"sys {statistics.median(s for _, s in c):.2f} s" for name, c in cpu.items())
    return row


def _profile_command(argv: list[str], top: int) -> None:
    """cProfile of one bfs command run in process: top functions by own time, then
    by cumulative time."""
    import cProfile
    import pstats

    from bfs_tools.cli.main import main

    prof = cProfile.Profile()
    prof.enable()
    try:
        main(argv)
    except SystemExit:
        pass
    prof.disable()
    st = pstats.Stats(prof, stream=sys.stderr)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)


def profile_populate(source: Path, top: int = 25) -> None:
    """cProfile of one `format --source` (in process)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        img = Path(d) / "prof.img"
        files, size = tree_stats(source)
        with open(img, "wb") as f:
            f.truncate(_image_size(size, files))
        _profile_command(["format", str(img), "--force", "--source", str(source)], top)


def profile_get(image: Path, parent: str | None, top: int = 25) -> None:
    """cProfile of one `get IMAGE / DEST -r` (in process)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=parent) as d:
        _profile_command(["get", str(image), "/", str(Path(d) / "out"), "-r"], top)


def get_row_alone(image: Path, ext4: Path, parent: str | None, runs: int) -> None:
    """The `get -r` row for existing images (bfs, ext4 of the same tree), printed."""
    import tempfile

    from run import Row, fmt_time, measure

    with tempfile.TemporaryDirectory(dir=parent) as d:
        row = get_row(image.name, image, ext4, Path(d) / "out", runs, Row, measure)
    print(f"{row.what}: bfs {fmt_time(row.ours.median)}", end="")
    for name, t in row.peers.items():
        print(f", {name} {fmt_time(t.median)}, ratio {row.ours.median / t.median:.2f}", end="")
    print(f"\n  bfs runs: {' '.join(f'{x:.2f}' for x in row.ours.times)}")
    for name, t in row.peers.items():
        print(f"  {name} runs: {' '.join(f'{x:.2f}' for x in t.times)}")
    print(f"  {row.note}")


if __name__ == "__main__":
    if "--get-row" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--get-row"]
        get_row_alone(Path(args[0]), Path(args[1]), args[2] if len(args) > 2 else None,
                      int(args[3]) if len(args) > 3 else 5)
    elif "--profile-get" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--profile-get"]
        profile_get(Path(args[0]), args[1] if len(args) > 1 else None)
    elif "--profile" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--profile"]
        if args:
            profile_populate(Path(args[0]))
        else:
            with __import__("tempfile").TemporaryDirectory() as d:
                profile_populate(stdlib_copy(Path(d)))
    else:
        print(__doc__)
