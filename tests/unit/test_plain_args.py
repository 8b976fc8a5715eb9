"""`bfs check` and `bfs cat` without click (cli/check_run.py check_args,
cli/cat_run.py cat_args): plain arguments are
taken as click takes them; anything else is left to click (None)."""

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
