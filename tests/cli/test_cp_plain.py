"""`bfs cp` with plain arguments runs without click (cli/entry.py, cli/cp_run.py);
through click (cli/main.py) it runs the same run_cp. Each case runs both ways
on two copies of one image: the same exit code, the same output, the same copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from bfs_tools.cli.cp_run import cp_args
from tests.cli.test_reflink import _tree, data_of, describe
from tests.conftest import Result

# `bfs ARGS` through click, as `bfs --debug` would but without changing the error policy
CLICK = "import sys; from bfs_tools.cli.main import main; main(sys.argv[1:])"


def via_click(*args) -> Result:
    env = dict(os.environ)
    env.pop("BFS_DEBUG", None)
    return Result(subprocess.run([sys.executable, "-c", CLICK, *map(str, args)],
                                 capture_output=True, env=env, timeout=120))


@pytest.fixture
def image(bfs, formatted, tmp_path):
    """/src a tree of every type, /f a file, /d a directory holding src/small
    (so copying /src into /d collides), /dangling a symlink to nowhere."""
    img = formatted("32M")
    host = tmp_path / "tree"
    _tree(host)
    bfs("put", img, host, "/src", "-r")
    (tmp_path / "f").write_bytes(data_of(50000, 1))
    bfs("put", img, tmp_path / "f", "/f")
    bfs("mkdir", img, "/d/src", "-p")
    bfs("put", img, tmp_path / "f", "/d/src/small")
    bfs("ln", img, "/nowhere", "/dangling", "-s")
    return img


def both_ways(bfs, new_image, image, args, *, plain: bool = True):
    """Run `bfs cp ARGS` on a copy of image without click and on another through
    click; both results (the copies are checked after the test, conftest)."""
    a, b = new_image("plain.img"), new_image("click.img")
    shutil.copyfile(image, a)
    shutil.copyfile(image, b)
    words = [str(w) for w in args]
    # the installed command takes the plain path exactly when cp_args accepts the words
    assert (cp_args(words) is not None) == plain
    r_plain = bfs("cp", *[w.replace("IMG", str(a)) for w in words], check_rc=None)
    r_click = via_click("cp", *[w.replace("IMG", str(b)) for w in words])
    assert r_plain.rc == r_click.rc, (r_plain, r_click)
    assert r_plain.out == r_click.out
    assert r_plain.errtext.replace(str(a), "IMG") == r_click.errtext.replace(str(b), "IMG")
    assert "Traceback" not in r_plain.errtext
    return a, b, r_plain


@pytest.mark.parametrize("args, result", [
    (["IMG", "/f", "/g"], "/g"),
    (["IMG", "/f", "/src"], "/src/f"),                      # into a directory
    (["IMG", "/f", "/src/small"], "/src/small"),            # over a file
    (["IMG", "/src", "/copy", "-r"], "/copy"),
    (["-r", "IMG", "/src", "/copy"], "/copy"),
    (["IMG", "-R", "/src", "/copy", "--no-progress"], "/copy"),
    (["IMG", "/src", "/copy", "-r", "--reflink", "always"], "/copy"),
    (["IMG", "/src", "/copy", "-r", "--reflink=always"], "/copy"),
    (["--reflink=never", "IMG", "/src", "-r", "/copy"], "/copy"),
])
def test_copies_agree(bfs, new_image, image, args, result):
    a, b, r = both_ways(bfs, new_image, image, args)
    assert r.rc == 0 and r.out == b"" and r.err == b""
    assert describe(a, result) == describe(b, result)
    src = next(w for w in args if w.startswith("/"))
    assert describe(a, result) == describe(a, src)


@pytest.mark.parametrize("args, rc, words", [
    (["IMG", "/missing", "/x"], 1, "no such file"),
    (["IMG", "/src", "/x"], 1, "use -r"),                        # a directory without -r
    (["IMG", "/f", "/dangling"], 1, "already exists"),           # an existing target
    (["IMG", "/src", "/d", "-r"], 1, "already exists"),          # /d/src/small exists
    (["IMG", "/src", "/f", "-r"], 1, "cannot overwrite a non-directory"),
    (["IMG", "/f", "/f"], 2, "same file"),
    (["IMG", "/f", "/nodir/x"], 1, "no such file"),
    (["-r", "IMG", "/src", "/src/d1"], 2, "into itself"),
])
def test_errors_agree(bfs, new_image, image, args, rc, words):
    _a, _b, r = both_ways(bfs, new_image, image, args)
    assert r.rc == rc and r.out == b""
    assert r.errtext.startswith("bfs: error: ") and words in r.errtext
    assert r.errtext.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["IMG", "/f", "/g", "--reflink=sometimes"],
    ["IMG", "/f", "/g", "--reflink", "ALWAYS"],
    ["IMG", "/f", "/g", "--reflink"],
    ["IMG", "/f"],
    ["IMG", "/f", "/g", "--no-such-option"],
])
def test_usage_errors_go_to_click(bfs, new_image, image, args):
    _a, _b, r = both_ways(bfs, new_image, image, args, plain=False)
    assert r.rc == 2 and r.errtext.startswith("bfs: error: ")
    assert r.errtext.count("\n") == 1 and "--help')" in r.errtext


def test_progress_bar_agrees(bfs, new_image, image):
    """--progress shows rich's bar on stderr even when it is not a terminal
    (where rich leaves an empty line); the plain path imports rich for it too."""
    a, b, r = both_ways(bfs, new_image, image, ["IMG", "/src", "/copy", "-r", "--progress"])
    assert r.rc == 0
    assert describe(a, "/copy") == describe(b, "/copy") == describe(a, "/src")
