"""Reflink benchmarks: bfs reflink / bfs cp against cp on a loop-mounted btrfs.

    python bench/run.py --only reflink

Rows (whole processes, median of N runs after one warm-up, each run on a fresh
copy of the prepared image / with the previous copy removed; bfs and the peers
of a row take turns run by run, so a busy spell of a shared machine slows both
sides of a ratio alike):

  * reflink of a 1 GiB file: `bfs reflink IMG /big /big.ref` vs
    `cp --reflink=always m/big m/big.ref`. The note gives the bytes bfs writes to
    the image, measured in-process with a RecordingDevice around the image file
    (every pwrite counted: journal, btree nodes, superblock; goal < 1 MiB), and
    the growth of the image file's allocated blocks.
  * plain copy of that file: `bfs cp --reflink=never` vs `cp --reflink=never`.
  * the Python standard library tree (site-packages excluded, as in
    /work/shared/peers/measured-on-this-machine.md): `bfs cp -r --reflink=always`
    vs `cp -a --reflink=always`, and both with `--reflink=never`; the btrfs rows
    also with `sync -f` after the cp (bfs cp is durable when it returns).
  * a copy of that copy (`bfs cp -r` of /dst after a first cp -r): every source
    key already a reflink_p (no peer row: btrfs does not tell the two apart).

btrfs: mkfs.btrfs on a sparse file, mount -o loop (root only; the rows show no
peer when that is not possible). The bfs processes run with their bytecode
cached (PYTHONPYCACHEPREFIX in the work directory, filled by the warm-up run),
as an installed tool has: this environment sets PYTHONDONTWRITEBYTECODE, which
would otherwise make every run compile bfs_tools from source (~0.15 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from inputs import stdlib_tree

GiB = 1 << 30
BFS = str(Path(sys.executable).parent / "bfs")


def _env(work: Path) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def _quiet(cmd, **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def _big_file(path: Path) -> None:
    """1 GiB of incompressible, non-repeating-per-MiB data."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(GiB >> 20):
            f.write(block[:-8] + i.to_bytes(8, "little"))


def _copy_image(src: Path, dst: Path) -> None:
    _quiet(["cp", "--sparse=always", str(src), str(dst)])


def _timed(run_once, Timing, runs: int, jobs: list[tuple]) -> list:
    """Time each job, (cmd, prepare, env), `runs` times after one warm-up, taking
    turns round by round: on a shared machine a busy spell then slows every
    side of a comparison alike, not whichever row ran during it."""
    times = [[] for _ in jobs]
    peaks, rcs = [0] * len(jobs), [0] * len(jobs)
    for i in range(runs + 1):
        for j, (cmd, prepare, env) in enumerate(jobs):
            prepare()
            dt, rss, rcs[j] = run_once(cmd, env=env)
            if i == 0:
                continue
            times[j].append(dt)
            peaks[j] = max(peaks[j], rss)
    for (cmd, prepare, env), rc in zip(jobs, rcs, strict=True):
        if rc != 0:     # say why in the output
            prepare()
            p = subprocess.run(cmd, capture_output=True, env=env)
            err = p.stderr.decode("utf-8", "replace").strip().splitlines()
            print(f"  {' '.join(map(str, cmd))}: rc {p.returncode}: {err[-1] if err else ''}",
                  file=sys.stderr)
    return [Timing(t, peak, rc) for t, peak, rc in zip(times, peaks, rcs, strict=True)]


def _row(run_once, Timing, runs: int, row, ours: tuple, peers: dict) -> object:
    """row with `ours` (cmd, prepare, env) and each of `peers` ({name: job})
    timed side by side."""
    names = list(peers)
    timings = _timed(run_once, Timing, runs, [ours] + [peers[n] for n in names])
    row.ours = timings[0]
    row.peers.update(zip(names, timings[1:], strict=True))
    return row


def _bytes_written(image: Path) -> int:
    """Bytes `bfs reflink` writes to the image, through a RecordingDevice."""
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.io.device import FileDevice, RecordingDevice, WriteOp
    from bfs_tools.remap import reflink_paths

    dev = RecordingDevice(FileDevice(str(image), write=True))
    try:
        fs = Filesystem.open(dev, write=True)
        reflink_paths(fs, "/big", "/big.ref")
        fs.close()
    finally:
        dev.inner.close()
    return sum(len(op.data) for op in dev.log if isinstance(op, WriteOp))


class Btrfs:
    """A loop-mounted btrfs holding the same inputs (None when unavailable)."""

    def __init__(self, work: Path):
        self.img = work / "btrfs.img"
        self.mnt = work / "btrfs-mnt"
        self.mounted = False

    def setup(self, big: Path, corpus: Path) -> str | None:
        if os.geteuid() != 0 or shutil.which("mkfs.btrfs") is None:
            return "btrfs peer needs root and mkfs.btrfs"
        with open(self.img, "wb") as f:
            f.truncate(8 * GiB)
        self.mnt.mkdir(exist_ok=True)
        try:
            _quiet(["mkfs.btrfs", "-f", "-q", str(self.img)])
            _quiet(["mount", "-o", "loop", str(self.img), str(self.mnt)])
        except (subprocess.CalledProcessError, OSError) as e:
            return f"btrfs peer unavailable ({e})"
        self.mounted = True
        _quiet(["cp", str(big), str(self.mnt / "big")])
        _quiet(["cp", "-a", str(corpus), str(self.mnt / "src")])
        _quiet(["sync", "-f", str(self.mnt)])
        return None

    def teardown(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mnt)], capture_output=True)
            self.mounted = False
        self.img.unlink(missing_ok=True)


def run(work: Path, runs: int, Row, Timing, run_once) -> list:
    env = _env(work)
    big = work / "big.bin"
    _big_file(big)
    corpus = stdlib_tree(work / "corpus")
    nfiles = sum(len(f) for _d, _s, f in os.walk(corpus))
    # images: one with the 1 GiB file, one with the corpus; each run gets a fresh copy
    img_big0, img_tree0, img = work / "big0.img", work / "tree0.img", work / "run.img"
    img_tree1 = work / "tree1.img"      # tree0 after one cp -r
    _quiet([BFS, "format", str(img_big0), "--size", "3G", "--force"])
    _quiet([BFS, "put", str(img_big0), str(big), "/big"])
    _quiet([BFS, "format", str(img_tree0), "--size", "1G", "--force"])
    _quiet([BFS, "put", str(img_tree0), str(corpus), "/src", "-r"])
    fresh_big = lambda: _copy_image(img_big0, img)      # noqa: E731
    fresh_tree = lambda: _copy_image(img_tree0, img)    # noqa: E731

    rows = []
    btrfs = Btrfs(work)
    problem = btrfs.setup(big, corpus)
    try:
        m = btrfs.mnt

        def rm(p: Path):
            return lambda: (subprocess.run(["rm", "-rf", str(p)]),
                            _quiet(["sync", "-f", str(m)]))

        # 1. reflink a 1 GiB file
        _copy_image(img_big0, img)
        before = img.stat().st_blocks * 512
        written = _bytes_written(img)
        grew = img.stat().st_blocks * 512 - before
        r = Row("reflink", "reflink 1 GiB file", None,
                note=f"bfs writes {written / 1024:.0f} KiB to the image (RecordingDevice), "
                     f"image allocation +{grew / 1024:.0f} KiB; goal < 1 MiB")
        peers = {} if problem else {"cp --reflink=always (btrfs)": (
            ["cp", "--reflink=always", str(m / "big"), str(m / "big.ref")], rm(m / "big.ref"),
            None)}
        rows.append(_row(run_once, Timing, runs, r, (
            [BFS, "reflink", str(img), "/big", "/big.ref"], fresh_big, env), peers))
        # 2. plain copy of it, for contrast
        r = Row("reflink", "copy 1 GiB file (--reflink=never)", None)
        peers = {} if problem else {"cp --reflink=never (btrfs)": (
            ["cp", "--reflink=never", str(m / "big"), str(m / "big.cp")], rm(m / "big.cp"),
            None)}
        rows.append(_row(run_once, Timing, runs, r, (
            [BFS, "cp", str(img), "/big", "/big.cp", "--reflink=never"], fresh_big, env), peers))
        # 3. the standard library tree, shared then copied
        for mode in ("always", "never"):
            r = Row("reflink", f"cp -r --reflink={mode} stdlib ({nfiles} files)", None)
            # bfs cp returns with the copy on the medium (its commit flushes);
            # cp on a mounted btrfs returns with it in the page cache: the
            # durable comparison adds syncfs
            peers = {} if problem else {
                f"cp -a --reflink={mode} (btrfs)": (
                    ["cp", "-a", f"--reflink={mode}", str(m / "src"), str(m / "dst")],
                    rm(m / "dst"), None),
                f"cp -a --reflink={mode} + sync -f (btrfs)": (
                    ["sh", "-c", f'cp -a --reflink={mode} "$1" "$2" && sync -f "$3"', "sh",
                     str(m / "src"), str(m / "dst"), str(m)], rm(m / "dst"), None)}
            rows.append(_row(run_once, Timing, runs, r, (
                [BFS, "cp", str(img), "/src", "/dst", "-r", f"--reflink={mode}"], fresh_tree,
                env), peers))
        # 4. a copy of that copy: every source key already a reflink_p, whose
        # indirect keys only get one more reference each
        _copy_image(img_tree0, img_tree1)
        _quiet([BFS, "cp", str(img_tree1), "/src", "/dst", "-r"], env=env)
        r = Row("reflink", f"cp -r --reflink=always of a copy ({nfiles} files)", None,
                note="the source is itself a copy: shared already")
        rows.append(_row(run_once, Timing, runs, r, (
            [BFS, "cp", str(img), "/dst", "/dst2", "-r", "--reflink=always"],
            lambda: _copy_image(img_tree1, img), env), {}))
        if problem is not None:
            rows[0].note += f"; {problem}"
    finally:
        btrfs.teardown()
        for p in (img, img_big0, img_tree0, img_tree1, big):
            p.unlink(missing_ok=True)
        shutil.rmtree(corpus, ignore_errors=True)
    return rows
