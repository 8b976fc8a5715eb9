"""`bfs check`, `bfs cat` and `bfs cp` without click (cli/check_run.py
check_args, cli/cat_run.py cat_args, cli/cp_run.py cp_args): plain arguments
are taken as click takes them; anything else is left to click (None)."""

from __future__ import annotations

import pytest

from bfs_tools.cli.check_run import check_args


@pytest.mark.parametrize("args, expected", [
    (["-n", "img"], ("img", {"mode": "no"})),
    (["img", "-n"], ("img", {"mode": "no"})),
    (["-y", "img"], ("img", {"mode": "yes"})),
    (["-p", "img"], ("img", {"mode": "preen"})),
    (["-a", "-p", "img"], ("img", {"mode": "preen"})),
    (["-n", "-n", "img"], ("img", {"mode": "no"})),
    (["-f", "-n", "img"], ("img", {"mode": "no"})),
    (["-n", "--json", "-v", "--verify-data", "img"],
     ("img", {"mode": "no", "as_json": True, "verbose": True, "verify_data": True})),
    (["-n", "--progress", "--no-progress", "img"], ("img", {"mode": "no", "progress": False})),
    (["-n", ""], ("", {"mode": "no"})),
])
def test_plain_arguments(args, expected):
    assert check_args(args) == expected


@pytest.mark.parametrize("args", [
    [],                          # no image: click's usage error
    ["-n"],
    ["img"],                     # interactive repairs: click prompts
    ["-n", "-y", "img"],         # two modes: click's usage error
    ["-nv", "img"],              # combined short flags: click parses them
    ["-n", "a", "b"],            # two images
    ["-n", "--", "img"],
    ["-n", "-x", "img"],         # unknown option
    ["--help"],
    ["-n", "--debug", "img"],
    ["-n", "--json=1", "img"],
])
def test_anything_else_is_left_to_click(args):
    assert check_args(args) is None


@pytest.mark.parametrize("args, expected", [
    (["img", "/f"], ("img", "/f")),
    (["img", "/a b"], ("img", "/a b")),
    (["img"], None),                   # missing PATH: click's usage error
    (["img", "/f", "/g"], None),
    (["--help"], None),
    (["-x", "img", "/f"], None),
    (["img", "--", "/f"], None),
])
def test_cat_plain_arguments(args, expected):
    from bfs_tools.cli.cat_run import cat_args

    assert cat_args(args) == expected


CP_DEFAULTS = {"recursive": False, "reflink": "auto", "progress": None}


@pytest.mark.parametrize("args, expected", [
    (["img", "/a", "/b"], ("img", "/a", "/b", {})),
    (["img", "/a", "/b", "-r"], ("img", "/a", "/b", {"recursive": True})),
    (["-r", "img", "/a", "/b"], ("img", "/a", "/b", {"recursive": True})),
    (["img", "-R", "/a", "/b"], ("img", "/a", "/b", {"recursive": True})),
    (["img", "/a", "/b", "--reflink=always"], ("img", "/a", "/b", {"reflink": "always"})),
    (["img", "/a", "/b", "--reflink", "never"], ("img", "/a", "/b", {"reflink": "never"})),
    (["--reflink", "never", "img", "/a", "/b"], ("img", "/a", "/b", {"reflink": "never"})),
    (["img", "--reflink=never", "/a", "--reflink=auto", "/b"],      # the last one wins
     ("img", "/a", "/b", {"reflink": "auto"})),
    (["img", "/a", "/b", "--progress"], ("img", "/a", "/b", {"progress": True})),
    (["img", "/a", "/b", "--progress", "--no-progress"], ("img", "/a", "/b", {"progress": False})),
    (["img", "/a b", ""], ("img", "/a b", "", {})),
])
def test_cp_plain_arguments(args, expected):
    from bfs_tools.cli.cp_run import cp_args
    from bfs_tools.cli.reflink_cmd import cp_cmd

    image, src, dst, kw = expected
    kw = {**CP_DEFAULTS, **kw}
    assert cp_args(args) == (image, src, dst, kw)
    # what click makes of the same words
    ctx = cp_cmd.make_context("cp", list(args))
    assert ctx.params == {"image": image, "src_path": src, "dst_path": dst, **kw}


@pytest.mark.parametrize("args", [
    [],
    ["img", "/a"],                          # missing DST_PATH: click's usage error
    ["img", "/a", "/b", "/c"],
    ["--help"],
    ["img", "/a", "/b", "-h"],
    ["img", "/a", "/b", "-x"],              # unknown option
    ["img", "/a", "/b", "--recursive"],
    ["-rR", "img", "/a", "/b"],             # combined short flags: click parses them
    ["img", "--", "/a", "/b"],
    ["img", "/a", "-"],                     # '-' is an argument to click: left to it
    ["img", "/a", "/b", "--reflink"],       # missing value
    ["img", "/a", "/b", "--reflink="],
    ["img", "/a", "/b", "--reflink=sometimes"],
    ["img", "/a", "/b", "--reflink", "ALWAYS"],     # click's choices are case-sensitive
    ["img", "/a", "/b", "--reflink", "-r"],
    ["img", "/a", "/b", "--reflinks=auto"],
    ["img", "/a", "/b", "--progress=yes"],
    ["img", "/a", "/b", "--debug"],
])
def test_cp_anything_else_is_left_to_click(args):
    from bfs_tools.cli.cp_run import cp_args

    assert cp_args(args) is None
