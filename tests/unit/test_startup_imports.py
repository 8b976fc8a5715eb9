"""What the open path imports: a structural guard on start-up, not a timing.

Every `bfs cat`, `bfs check` or `bfs cp` pays for each module it imports before it reads
a byte. dataclasses (with inspect, ast, dis, tokenize) cost ~20 ms, typing
~3 ms; click and json are needed only by other commands or options. This runs
the installed `bfs` under `python -X importtime`, which lists every module the
process imports, and fails when one of those appears on the plain paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BFS = str(Path(sys.executable).parent / "bfs")   # the installed command, as tests/conftest.py

# not imported by `bfs cat IMAGE PATH`, `bfs check -n IMAGE` or `bfs cp IMAGE SRC DST`
HEAVY = ("dataclasses", "typing", "inspect", "ast", "json", "click", "rich", "construct")


def imported_modules(*args) -> set[str]:
    """Every module `bfs ARGS` imports, as -X importtime reports them."""
    env = dict(os.environ)
    env.pop("BFS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", BFS, *map(str, args)],
                          capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    names = set()
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "bfs_tools.cli.entry" in names   # the report was read
    return names


@pytest.fixture
def image(bfs, new_image, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty").write_bytes(b"")
    (src / "small").write_bytes(b"hello\n")
    img = new_image()
    bfs("format", img, "--size", "64M", "--source", src)
    return img


@pytest.mark.parametrize("args", [
    ("cat", "{img}", "/empty"),
    ("cat", "{img}", "/small"),
    ("check", "-n", "{img}"),
])
def test_plain_commands_import_nothing_heavy(image, args):
    argv = [a.format(img=image) for a in args]
    heavy = imported_modules(*argv) & set(HEAVY)
    assert not heavy, f"bfs {' '.join(argv)} imports {sorted(heavy)}"


CP = [("cp", "{img}", "/small", "/copy"),
      ("cp", "-r", "{img}", "/empty", "/copy", "--reflink", "always", "--no-progress")]


@pytest.mark.parametrize("args", CP)
def test_plain_cp_imports_nothing_heavy(image, args):
    argv = [a.format(img=image) for a in args]
    heavy = imported_modules(*argv) & set(HEAVY)
    assert not heavy, f"bfs {' '.join(argv)} imports {sorted(heavy)}"


# Commands that go through click pay for what click imports (typing, inspect,
# datetime, uuid), but nothing more of that kind.
CLICK_HEAVY = ("dataclasses", "json", "rich", "construct")


@pytest.mark.parametrize("args", [
    ("ls", "{img}", "/"),
    ("stat", "{img}", "/small"),
    ("df", "{img}"),
    ("dump", "super", "{img}"),
    ("--help",),
])
def test_click_commands_import_nothing_more(image, args):
    argv = [a.format(img=image) for a in args]
    names = imported_modules(*argv)
    assert "click" in names
    heavy = names & set(CLICK_HEAVY)
    assert not heavy, f"bfs {' '.join(argv)} imports {sorted(heavy)}"
