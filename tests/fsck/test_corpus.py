"""The golden fsck corpus (TESTING.md item 1; e2fsprogs f_*, btrfs-progs fsck-tests).

For every fixtures/fsck/NNN-name/: run 1 `check -y` (exit 1; 0 for the clean
control) whose normalised output equals expect.1; run 2 `check -n` (exit 0)
equal to expect.2; and every file the damage did not touch (the `sha256`
list) reads back byte-identical. Regenerate with
`python tests/fsck/make_corpus.py --update [NNN ...]` and review the diff.
"""

from __future__ import annotations

import difflib
import lzma
import shutil
from pathlib import Path

import pytest

from tests.fsck import lib
from tests.fsck.make_corpus import CLASSES, FIXTURES

DIRS = sorted(p for p in FIXTURES.glob("[0-9][0-9][0-9]-*") if p.is_dir())


def _diff(want: str, got: str, name: str) -> str:
    return "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                        f"{name} (expected)", f"{name} (got)"))


def unpack(fixture: Path, dest: Path) -> Path:
    img = dest / "image"
    with lzma.open(fixture / "image.xz", "rb") as f, open(img, "wb") as out:
        shutil.copyfileobj(f, out)
    return img


def test_corpus_size():
    """At least 50 corruption classes plus the clean control, one fixture each."""
    names = {p.name for p in DIRS}
    assert "001-clean" in names
    assert len(names - {"001-clean"}) >= 50, len(names)
    assert {cl.dirname for cl in CLASSES} == names, (
        "fixtures and make_corpus.py classes differ: run `python tests/fsck/make_corpus.py "
        "--update`")


COMMANDS = [["dump", "super", "IMG"], ["dump", "journal", "IMG"],
            ["dump", "btree", "IMG", "inodes"], ["dump", "btree", "IMG", "dirents", "--json"],
            ["dump", "alloc", "IMG"], ["ls", "IMG", "/", "-R", "-l"],
            ["cat", "IMG", "/docs/a.txt"], ["cat", "IMG", "/many/f007"]]


@pytest.mark.parametrize("fixture", DIRS, ids=[p.name for p in DIRS])
def test_fixture(fixture: Path, tmp_path: Path):
    img = unpack(fixture, tmp_path)
    args = (fixture / "args").read_text().split() if (fixture / "args").exists() else []
    # the damaged image first: every command ends cleanly, or with one clear error
    from tests.fuzz.randfuzz import run_commands

    cmds = COMMANDS + [["get", "IMG", "/", str(tmp_path / "out"), "-r"]]
    problems = run_commands(img, cmds)
    assert not problems, "\n".join(problems)
    r1, r2 = lib.corpus_runs(img, args)
    got1, got2 = lib.render(r1, img), lib.render(r2, img)
    want1, want2 = (fixture / "expect.1").read_text(), (fixture / "expect.2").read_text()
    assert r1.rc == (0 if fixture.name == "001-clean" else 1), r1
    assert got1 == want1, _diff(want1, got1, f"{fixture.name}/expect.1")
    assert r2.rc == 0, r2
    assert got2 == want2, _diff(want2, got2, f"{fixture.name}/expect.2")
    expected = {}
    for line in (fixture / "sha256").read_text().splitlines():
        digest, path = line.split("  ", 1)
        expected[path] = digest
    assert not lib.lost(img, expected, set())
