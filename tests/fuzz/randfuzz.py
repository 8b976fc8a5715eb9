"""Random fuzzing (TESTING.md item 4; e2fsprogs e2fuzz).

Case `seed`: a copy of a base image (clean, or needing journal replay) gets a
few random bytes of one metadata structure changed (a superblock copy, the
layout record, a btree node, the journal); then every command runs on it:
check -n, dump super/journal/btree/alloc, ls -R, get -r, cat. Oracle: no
traceback or internal error, a documented exit code, each command within
10 s, the process under 512 MiB; and `check -y` converges (`check -n` exits
0 after at most two repair runs).

A failing case is minimised (the smallest subset of its byte changes that
still fails the same way) and kept under fixtures/fuzz/NAME/ with its seed
and commands (`--keep`); tests/fuzz/test_crashers.py replays those forever.

    python -m tests.fuzz.randfuzz --seeds 0:10000 [--keep]
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bfs_tools.formats.constants import LAYOUT_OFFSET, SB_OFFSET  # noqa: E402
from bfs_tools.formats.ids import BtreeId  # noqa: E402

from tests.fsck import lib  # noqa: E402
from tests.fuzz.fieldfuzz import MEMORY_LIMIT, TIMEOUT, Bases, _only_unrepairable  # noqa: E402

ROOT_DIR = Path(__file__).resolve().parents[2]
CRASHERS = ROOT_DIR / "fixtures" / "fuzz"
# exit codes every command but check may use (README "Exit codes"); 70 is a bug
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6}
CHECK_CODES = {0, 1, 4, 8}


@dataclass
class Case:
    seed: int
    unclean: bool = False
    target: str = ""
    flips: list[tuple[int, int]] = field(default_factory=list)   # (byte offset, xor mask)


def _regions(img: Path, unclean: bool) -> list[tuple[str, int, int]]:
    """(name, offset, length) of the metadata structures of an image."""
    p = lib.store_params(img)
    sb = p["sb"]
    out = [("sb-primary", SB_OFFSET, 1024), ("layout", LAYOUT_OFFSET, 72)]
    out += [(f"sb-copy@{o}", o, 512) for o in sb.offsets[1:]]
    for n in lib.nodes(img):
        out.append((f"node:{BtreeId(n.btree).name}:L{n.level}@{n.sector}", n.offset,
                    p["node_size"]))
    for i, b in enumerate(sb.journal_buckets[:4]):
        out.append((f"journal:{i}@{b}", b * sb.bucket_size, 4096))
    return out


def make_case(seed: int, bases: Bases) -> Case:
    rng = random.Random(seed)
    unclean = rng.random() < 0.25
    img, _m = bases.get(unclean)
    regions = _regions(img, unclean)
    name, off, length = rng.choice(regions)
    n = rng.choice([1, 1, 1, 2, 2, 3, 4, 8, 16])
    # node headers and the first bytes of keys are where most damage matters
    flips = []
    for _ in range(n):
        span = length if rng.random() < 0.5 else min(length, 256)
        flips.append((off + rng.randrange(span), rng.randrange(1, 256)))
    return Case(seed, unclean, name, flips)


def apply(case: Case, base: Path, dest: Path) -> None:
    shutil.copyfile(base, dest)
    with open(dest, "r+b") as f:
        for off, mask in case.flips:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ mask]))


def commands(rng: random.Random, m: lib.Manifest, out: Path) -> list[list[str]]:
    files = sorted(p for p, h in m.files.items() if h not in ("dir",)
                   and not h.startswith("special"))
    btree = rng.choice([b.name for b in BtreeId])
    return [
        ["dump", "super", "IMG"],
        ["dump", "journal", "IMG"],
        ["dump", "btree", "IMG", btree],
        ["dump", "btree", "IMG", "inodes", "--json"],
        ["dump", "alloc", "IMG"],
        ["ls", "IMG", "/", "-R", "-l"],
        ["get", "IMG", "/", str(out / "get"), "-r"],
        ["cat", "IMG", rng.choice(files)],
    ]


def run_commands(img: Path, cmds: list[list[str]]) -> list[str]:
    problems = []
    for cmd in cmds:
        argv = [str(img) if a == "IMG" else a for a in cmd]
        try:
            r = lib.run_cli(*argv, timeout=TIMEOUT)
        except lib.Timeout as e:
            problems.append(f"hang: {e}")
            continue
        codes = CHECK_CODES if cmd[0] == "check" else DOCUMENTED
        if r.crashed or r.rc not in codes:
            problems.append(f"bfs {' '.join(cmd)}: exit {r.rc}: {r.err[-2000:]}")
        elif r.rc and cmd[0] != "check" and not _one_clear_error(r.err):
            problems.append(f"bfs {' '.join(cmd)}: exit {r.rc}, unclear error output: "
                            f"{r.err[-2000:]!r}")
        if cmd[0] == "get":
            shutil.rmtree(argv[3], ignore_errors=True)
    return problems


def _one_clear_error(err: str) -> bool:
    lines = [x for x in err.splitlines() if x.strip()]
    return bool(lines) and all(x.startswith("bfs: ") for x in lines)


def check_converges(img: Path) -> list[str]:
    try:
        r = lib.run_cli("check", "-n", img, timeout=TIMEOUT)
        if r.crashed or r.rc not in CHECK_CODES:
            return [f"check -n: {r}"]
        if r.rc == 8:
            return []   # cannot be opened: one clear error is the documented outcome
        for _attempt in range(2):
            y = lib.run_cli("check", "-y", img, timeout=TIMEOUT)
            if y.crashed or y.rc not in CHECK_CODES:
                return [f"check -y: {y}"]
            n = lib.run_cli("check", "-n", img, timeout=TIMEOUT)
            if n.crashed or n.rc not in CHECK_CODES:
                return [f"check -n after -y: {n}"]
            if n.rc == 0:
                return []
        if _only_unrepairable(n):
            return []   # only unrepairable findings left (exit 4 is the documented answer)
        return [f"check -y does not converge in two runs: {y}\nthen: {n}"]
    except lib.Timeout as e:
        return [f"hang: {e}"]


def run_case(case: Case, bases: Bases, work: Path) -> list[str]:
    base, m = bases.get(case.unclean)
    img = work / "case.img"
    apply(case, base, img)
    rng = random.Random(case.seed ^ 0x5EED)
    with lib.memory_limit(MEMORY_LIMIT):
        problems = run_commands(img, commands(rng, m, work))
        problems += check_converges(img)
    return problems


def _signature(problems: list[str]) -> str:
    return problems[0].split(":")[0] if problems else ""


def minimise(case: Case, bases: Bases, work: Path) -> Case:
    """The smallest subset of the case's byte changes that still fails alike."""
    sig = _signature(run_case(case, bases, work))
    flips = list(case.flips)
    i = 0
    while i < len(flips) and len(flips) > 1:
        trial = Case(case.seed, case.unclean, case.target, flips[:i] + flips[i + 1:])
        if _signature(run_case(trial, bases, work)) == sig:
            flips = trial.flips
        else:
            i += 1
    return Case(case.seed, case.unclean, case.target, flips)


def save(img: Path, name: str, info: dict, how: str, failure: str) -> Path:
    """Keep a crasher's image under fixtures/fuzz/NAME/ (image.xz, case.json, README)."""
    dest = CRASHERS / name
    dest.mkdir(parents=True, exist_ok=True)
    with open(img, "rb") as f, lzma.open(dest / "image.xz", "wb", preset=9) as out:
        shutil.copyfileobj(f, out)
    info = dict(info, failure=failure[:2000])
    (dest / "case.json").write_text(json.dumps(info, indent=1) + "\n")
    (dest / "README").write_text(
        f"# fuzz crasher {name}\n\n{how}\n\nReplayed by tests/fuzz/test_crashers.py: the "
        "commands in case.json and check -y must not crash, must stay bounded, and repair "
        "must converge.\n\nFailure seen when it was found:\n\n"
        + "\n".join("    " + x for x in failure.splitlines()[:30]) + "\n")
    return dest


def keep(case: Case, bases: Bases, work: Path, problems: list[str],
         minimised: bool = True) -> Path:
    """Save a (minimised) random-fuzz case under fixtures/fuzz/."""
    base, m = bases.get(case.unclean)
    img = work / "keep.img"
    apply(case, base, img)
    rng = random.Random(case.seed ^ 0x5EED)
    info = {"seed": case.seed, "unclean": case.unclean, "target": case.target,
            "flips": case.flips, "commands": commands(rng, m, Path("OUT"))}
    kind = "unclean" if case.unclean else "clean"
    how = (f"Found by `python -m tests.fuzz.randfuzz --seeds {case.seed}:{case.seed + 1}`: "
           f"bytes {case.flips} of {case.target} changed ({kind} base image)"
           + (", minimised." if minimised else "."))
    return save(img, f"seed-{case.seed:05d}", info, how, problems[0] if problems else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0:100", help="START:END")
    ap.add_argument("--keep", action="store_true", help="minimise and keep crashers")
    ap.add_argument("--save", default=None, metavar="WHY",
                    help="keep every case of the range (a fixed crasher), WHY in its README")
    ap.add_argument("--stop", action="store_true")
    a = ap.parse_args(argv)
    lo, hi = map(int, a.seeds.split(":"))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bases = Bases(work)
        for seed in range(lo, hi):
            case = make_case(seed, bases)
            problems = run_case(case, bases, work)
            if a.save is not None:
                print(f"kept {keep(case, bases, work, problems or [a.save], minimised=False)}")
            if problems:
                failed += 1
                print(f"FAIL seed {seed} {case.target} {case.flips}")
                for p in problems:
                    print("    " + p.replace("\n", "\n    ")[:3000])
                if a.keep:
                    small = minimise(case, bases, work)
                    print(f"    kept {keep(small, bases, work, run_case(small, bases, work))}")
                if a.stop:
                    break
            if (seed - lo) % 50 == 0:
                print(f"{seed - lo}/{hi - lo} cases, {failed} failed", file=sys.stderr)
    print(f"{hi - lo} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
