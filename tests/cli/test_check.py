"""`bfs check` on the command line (TESTING.md item 9): fsck(8) exit codes, -n/-y/-p
and interactive repairs, --json against its documented schema, one clear line
for bad arguments. Real processes (the installed `bfs`), real image files."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import time

import pytest

from tests.conftest import BFS
from tests.fsck import lib
from tests.helpers import corrupt_primary_superblock


def _dangling(img) -> None:
    """A dirent naming an inode that does not exist (dirent_target_missing: 'yes')."""
    from bfs_tools.formats.ids import BtreeId, DirentType

    from bfs_tools.fs import hashed
    from bfs_tools.fs.dirent import Dirent, dirent_key
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.fs.strhash import name_hash

    fs = Filesystem.open(str(img))
    try:
        root = fs.resolve("/")
        slot = hashed.find_slot(fs.btrees, BtreeId.dirents, root.where.inum,
                                name_hash(b"ghost", root.inode.hash_seed),
                                fs.visible(root.where.snapshot))
        key = dirent_key((root.where.inum, slot, root.where.snapshot),
                         Dirent(99999, DirentType.reg, b"ghost"))
    finally:
        fs.close()
    lib.put_keys(img, [(BtreeId.dirents, key)])


@pytest.fixture
def image(formatted, bfs, tmp_path):
    img = formatted("16M")
    src = tmp_path / "f"
    src.write_bytes(b"some data\n" * 100)
    bfs("put", img, src, "/f")
    bfs("mkdir", img, "/d")
    return img


def test_clean_image_exits_0(bfs, image):
    r = bfs("check", "-n", image)
    assert "clean" in r.text
    bfs("check", "-y", image)
    bfs("check", "-p", image)
    bfs("check", "-f", "-n", image)


@pytest.mark.damaged
def test_damage_exit_codes(bfs, image):
    _dangling(image)
    r = bfs("check", "-n", image, check_rc=4)
    assert "dirent_target_missing" in r.text and "[not fixed]" in r.text
    # -p repairs only what is safe: this is not, so it is left (exit 4), and written nowhere
    r = bfs("check", "-p", image, check_rc=4)
    assert "[not fixed]" in r.text
    r = bfs("check", "-y", image, check_rc=1)
    assert "[fixed]" in r.text
    bfs("check", "-n", image)


@pytest.mark.damaged
def test_preen_repairs_what_is_safe(bfs, image):
    corrupt_primary_superblock(image)
    r = bfs("check", "-p", image, check_rc=1)
    assert "sb_primary_bad" in r.text and "[fixed]" in r.text
    bfs("check", "-n", image)


def test_operational_errors_exit_8(bfs, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * (1 << 20))
    for target in (junk, tmp_path / "missing", tmp_path):
        r = bfs("check", "-n", target, check_rc=8)
        lines = r.errtext.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bfs: error: "), r
        assert "Traceback" not in r.errtext


def test_usage_errors_exit_16(bfs, image):
    for args in (["check", "-n", "-y", image], ["check", "--bogus", image], ["check"]):
        r = bfs(*args, check_rc=16)
        lines = r.errtext.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bfs: error: "), r


def test_interactive_needs_a_terminal(bfs, image):
    r = bfs("check", image, check_rc=8, input=b"y\n")
    assert "terminal" in r.errtext


def test_read_only_image_file_can_be_checked(bfs, image):
    os.chmod(image, stat.S_IRUSR)
    try:
        bfs("check", "-n", image)
    finally:
        os.chmod(image, stat.S_IRUSR | stat.S_IWUSR)


def test_busy_image(bfs, image):
    """A second writer gets one clear error (exit 8 for check)."""
    from bfs_tools.store import Store

    store = Store.open(str(image), write=True)
    try:
        r = bfs("check", "-y", image, check_rc=8)
        assert r.errtext.startswith("bfs: error: ")
    finally:
        store.close()


def _validate(doc: dict) -> None:
    """The schema documented in bfs_tools/fsck/report.py."""
    assert doc["version"] == 1
    assert isinstance(doc["image"], str) and doc["mode"] in ("no", "yes", "preen", "ask")
    for f in doc["findings"]:
        assert set(f) >= {"pass", "id", "error", "severity", "location", "message",
                          "repairable", "fixed"}
        assert set(f) <= {"pass", "id", "error", "severity", "location", "message",
                          "repairable", "fixed", "path"}
        assert isinstance(f["id"], int) and f["severity"] in ("error", "warning")
        assert isinstance(f["repairable"], bool) and isinstance(f["fixed"], bool)
    s = doc["summary"]
    assert set(s) == {"errors", "warnings", "fixed", "unfixed", "seconds", "passes"}
    assert all(isinstance(s[k], int) for k in ("errors", "warnings", "fixed", "unfixed"))
    assert isinstance(s["seconds"], float) and isinstance(s["passes"], dict)
    assert doc["exit_code"] in (0, 1, 4, 5)


@pytest.mark.damaged
def test_json_output(bfs, image):
    doc = json.loads(bfs("check", "-n", "--json", image).text)
    _validate(doc)
    assert doc["findings"] == [] and doc["exit_code"] == 0
    _dangling(image)
    r = bfs("check", "-n", "--json", image, check_rc=4)
    doc = json.loads(r.text)
    _validate(doc)
    assert doc["exit_code"] == 4
    assert any(f["error"] == "dirent_target_missing" and not f["fixed"]
               for f in doc["findings"])
    doc = json.loads(bfs("check", "-y", "--json", image, check_rc=1).text)
    _validate(doc)
    assert doc["exit_code"] == 1 and all(f["fixed"] for f in doc["findings"])


def _interactive(image, answers: bytes, timeout: float = 60.0) -> tuple[int, bytes]:
    """`bfs check IMAGE` on a pseudo-terminal, answering each prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(BFS, [BFS, "check", "--no-progress", str(image)])
    out = b""
    todo = list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if todo and out.rstrip().endswith(b":"):
                os.write(fd, bytes([todo.pop(0)]) + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


@pytest.mark.damaged
def test_interactive_quit_exits_32_and_repairs_nothing(image):
    _dangling(image)
    rc, out = _interactive(image, b"q")
    assert rc == 32, out
    r = subprocess.run([BFS, "check", "-n", str(image)], capture_output=True, text=True)
    assert r.returncode == 4 and "dirent_target_missing" in r.stdout, r


@pytest.mark.damaged
def test_interactive_yes(image):
    _dangling(image)
    rc, out = _interactive(image, b"yyyyyyyy")
    assert rc == 1, out
    assert subprocess.run([BFS, "check", "-n", str(image)]).returncode == 0
