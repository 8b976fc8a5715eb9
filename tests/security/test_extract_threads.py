"""`get -r` writes small files on threads (bfs_tools/extract.py, _Writers): the
extracted tree, the warnings and the exit code must not depend on the number of
threads or on their timing, errors met on a thread are reported like any other,
and an unexpected exception on a thread surfaces in the caller."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
import subprocess

import pytest

import bfs_tools.extract as extract
from bfs_tools.extract import Extractor
from bfs_tools.fs.filesystem import Filesystem
from tests.conftest import BFS, run_bfs

MTIME = 1_600_000_000_123_456_789


def _source_tree(root) -> None:
    """Directories of many small files (more than a batch), a few big ones, hard
    links within and across directories, symlinks, xattrs, a sparse file, a fifo,
    odd modes, and distinct times on everything (directories included)."""
    root.mkdir()
    n = 0
    for d in range(6):
        sub = root / f"dir{d}" / ("deeper" if d % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(40 + 7 * d):
            p = sub / f"f{i:03d}"
            size = (i * 997 + d * 131) % 9000 if i % 13 else 300_000 + i
            p.write_bytes(hashlib.sha256(p.name.encode()).digest() * (size // 32 + 1))
            os.truncate(p, size)
            os.chmod(p, (0o644, 0o600, 0o755, 0o4755, 0o444)[i % 5])
            if i % 7 == 0:
                os.setxattr(p, "user.n", str(i).encode())
            n += 1
            os.utime(p, ns=(MTIME + n, MTIME + 2 * n))
    os.link(root / "dir0" / "f001", root / "dir0" / "hard-same-dir")
    os.link(root / "dir2" / "f002", root / "dir5" / "deeper" / "hard-other-dir")
    os.symlink("f003", root / "dir0" / "rel-link")
    os.symlink("/nowhere/at/all", root / "dir3" / "deeper" / "dangling")
    with open(root / "dir4" / "sparse", "wb") as f:
        f.truncate(50 << 20)
        f.seek(20 << 20)
        f.write(b"middle")
    os.mkfifo(root / "dir1" / "fifo")
    os.setxattr(root / "dir2", "user.on-dir", b"yes")
    for k, (dirpath, _dirs, _files) in enumerate(sorted(os.walk(root), reverse=True)):
        os.utime(dirpath, ns=(MTIME - k, MTIME - 2 * k), follow_symlinks=False)


def digest(root, atimes: bool = True) -> list[tuple]:
    """Everything an extraction must reproduce: per path the type, mode, owner,
    size, times (ns), contents, allocated size of sparse files, xattrs, symlink
    target, and which paths are links of one inode. (atimes=False: a source tree's
    access times change as `format --source` reads it.)"""
    stats = []          # every lstat first: reading a file or a directory changes its atime
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        stats += [(os.path.join(dirpath, n), os.lstat(os.path.join(dirpath, n)))
                  for n in sorted(dirs + files)]
    out, first_link = [], {}
    for p, st in stats:
        what = None
        if stat.S_ISLNK(st.st_mode):
            what = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                what = hashlib.sha256(f.read()).hexdigest()
            if st.st_size > 10 << 20:
                what += f" blocks<{st.st_blocks < 1024}"
            if st.st_nlink > 1:
                what += " link of " + first_link.setdefault(st.st_ino, p)[len(root):]
        xattrs = () if stat.S_ISLNK(st.st_mode) else tuple(
            sorted((x, os.getxattr(p, x)) for x in os.listxattr(p)))
        size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
        out.append((p[len(root):], st.st_mode, st.st_uid, st.st_gid, size, st.st_mtime_ns,
                    st.st_atime_ns if atimes and not stat.S_ISLNK(st.st_mode) else 0,
                    what, xattrs))
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("threads")
    src = d / "src"
    _source_tree(src)
    img = d / "tree.img"
    run_bfs("format", img, "--size", "256M", "--source", src)
    return src, img


def extract_in_process(img, dest, threads: int) -> list[str]:
    with Filesystem.open(str(img)) as fs:
        ex = Extractor(fs, threads=threads)
        try:
            rep = ex.get(fs.resolve("/", follow=True), str(dest), recursive=True)
        finally:
            ex.close()
    return rep.skipped


@pytest.fixture
def small_queues(monkeypatch):
    """Batches of 2 files, 6 files in flight, 2 directories waiting to be closed:
    every queue of _Writers fills up and waits, many times, on a small tree."""
    monkeypatch.setattr(extract, "BATCH_FILES", 2)
    monkeypatch.setattr(extract, "INFLIGHT_FILES", 6)
    monkeypatch.setattr(extract, "CLOSING", 2)


def test_same_tree_whatever_the_threads(image, tmp_path, small_queues):
    src, img = image
    want = digest(str(src), atimes=False)
    assert any(e[1] & stat.S_ISUID for e in want)
    # get drops setuid unless asked: what the source holds, with those bits off
    want = [(e[0], e[1] & ~stat.S_ISUID, *e[2:]) for e in want]
    first = None
    for threads in (0, 1, 2, 4):
        for attempt in range(2):
            out = tmp_path / f"out-{threads}-{attempt}"
            assert extract_in_process(img, out, threads) == []
            got = digest(str(out))          # once: reading a tree changes its atimes
            assert [(*e[:6], 0, *e[7:]) for e in got] == want, (threads, attempt)
            first = first or got
            assert got == first, (threads, attempt)


def test_the_command_extracts_the_same_tree(image, tmp_path):
    src, img = image
    out = tmp_path / "out"
    run_bfs("get", img, "/", out, "-r")
    ref = tmp_path / "ref"
    extract_in_process(img, ref, 0)
    assert digest(str(out)) == digest(str(ref))


LIMIT = 8192


def _file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_errors_on_threads_are_warnings_with_the_name(image, tmp_path):
    """Files beyond RLIMIT_FSIZE fail on the writer threads: each is reported with
    its name, in entry order, the same list every time and the same as without
    threads; the rest is extracted; exit code 1, no traceback."""
    src, img = image
    sizes = [os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(src)
             for n in names]
    # some fail on the main thread (big files), some on the writers (small files)
    assert any(s > extract.SMALL_FILE for s in sizes)
    assert any(LIMIT < s <= extract.SMALL_FILE for s in sizes)
    errs = []
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        p = subprocess.run([BFS, "get", str(img), "/", str(out), "-r"], capture_output=True,
                           preexec_fn=_file_size_limit, timeout=120)
        err = p.stderr.decode()
        assert p.returncode == 1, err
        assert "Traceback" not in err and "internal error" not in err, err
        errs.append(err)
        for dirpath, _dirs, files in os.walk(src):
            for name in files:
                s = os.path.join(dirpath, name)
                rel = os.path.relpath(s, src)
                if os.path.islink(s) or not os.path.isfile(s):
                    continue
                if os.path.getsize(s) > LIMIT:
                    assert f"/{rel}: " in err, rel
                    assert not os.path.lexists(out / rel), rel
                else:
                    with open(s, "rb") as f, open(out / rel, "rb") as g:
                        assert f.read() == g.read(), rel
    assert errs[0] == errs[1]
    lines = errs[0].splitlines()
    assert "/dir0/f000: File too large; skipped" in lines[0]
    assert lines[-1].endswith("item(s) not extracted (see warnings above)")
    # the same warnings, in the same order, as the sequential extraction
    pid = os.fork()
    if pid == 0:                                  # the limit applies to this process only
        try:
            _file_size_limit()
            skipped = extract_in_process(img, tmp_path / "seq", 0)
            ok = [f"bfs: warning: {s}" for s in skipped] == lines[:-1]
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_an_exception_on_a_thread_reaches_the_caller(image, tmp_path, monkeypatch):
    """A bug on a writer thread is raised by get() itself (the CLI then reports it
    as it reports any error), after the threads have stopped, with no directory of
    the destination left open."""
    _src, img = image
    real = Extractor._write_file

    def failing(self, dfd, name, *args):
        if name == b"f005":
            raise RuntimeError("boom in the writer")
        return real(self, dfd, name, *args)

    monkeypatch.setattr(Extractor, "_write_file", failing)
    before = set(os.listdir("/proc/self/fd"))
    for threads in (0, 2):
        with pytest.raises(RuntimeError, match="boom in the writer"):
            extract_in_process(img, tmp_path / f"out{threads}", threads)
    # (the image stays open while the exception holds the frames that map it)
    left = [os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - before]
    assert not [p for p in left if p.startswith(str(tmp_path))], left
