"""Every crasher the fuzzers found, replayed forever (fixtures/fuzz/NAME/:
image.xz, case.json with the seed and the commands, README). Oracle: no
traceback or internal error, documented exit codes, bounded, and repair
converges."""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest

from tests.fsck import lib
from tests.fuzz import randfuzz

DIRS = sorted(p for p in randfuzz.CRASHERS.glob("*") if (p / "case.json").exists())


@pytest.mark.damaged
@pytest.mark.parametrize("crasher", DIRS, ids=[p.name for p in DIRS])
def test_crasher(crasher: Path, tmp_path: Path):
    img = tmp_path / "image"
    with lzma.open(crasher / "image.xz", "rb") as f, open(img, "wb") as out:
        shutil.copyfileobj(f, out)
    info = json.loads((crasher / "case.json").read_text())
    cmds = [[str(tmp_path) + a[3:] if a.startswith("OUT") else a for a in c]
            for c in info["commands"]]
    with lib.memory_limit(randfuzz.MEMORY_LIMIT):
        problems = randfuzz.run_commands(img, cmds)
        problems += randfuzz.check_converges(img)
    assert not problems, "\n".join(problems)


def test_crashers_are_kept_with_their_case():
    for d in randfuzz.CRASHERS.glob("*"):
        if d.is_dir():
            assert (d / "case.json").exists() and (d / "image.xz").exists(), d
