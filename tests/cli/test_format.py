"""`bfs format` and `bfs dump super`: results, JSON, and every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from bfs_tools.errors import UnsupportedFeatureError
from bfs_tools.store import Store
from tests.helpers import corrupt_primary_superblock, rewrite_superblock


def test_format_creates_sparse_image_and_dump_super(bfs, new_image):
    img = new_image()
    r = bfs("format", img, "--size", "256M", "--label", "demo")
    assert "formatted" in r.text
    assert img.stat().st_size == 256 << 20
    assert img.stat().st_blocks * 512 < 8 << 20          # sparse: only metadata written
    d = json.loads(bfs("dump", "super", img, "--json").out)
    assert d["label"] == "demo" and d["clean"] and d["device_size"] == 256 << 20
    assert len(d["layout"]["copies"]) == 3 and all(c["status"] == "ok" for c in d["layout"]["copies"])
    assert set(d["features_incompat"]) == {"reflink", "inline_data", "snapshots"}
    text = bfs("dump", "super", img).text
    for needle in ("Label:", "demo", "Bucket size:", "Superblock copies:", "Root inodes:"):
        assert needle in text


def test_format_options_and_uuid(bfs, new_image):
    img = new_image()
    u = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    bfs("format", img, "--size", "64m", "--block-size", "1k", "--bucket-size", "128K",
        "--btree-node-size", "32k", "--uuid", u, "--data-checksum", "xxhash")
    d = json.loads(bfs("dump", "super", img, "--json").out)
    assert (d["block_size"], d["bucket_size"], d["btree_node_size"]) == (1024, 128 << 10, 32 << 10)
    assert d["uuid"] == u and d["data_checksum"] == "xxhash"


def test_format_json(bfs, new_image):
    img = new_image()
    d = json.loads(bfs("format", img, "--size", "64M", "--json").out)
    assert d["nbuckets"] == 1024 and d["clean"]


def test_format_on_block_device(bfs, loopdev):
    bfs("format", loopdev, "--force")
    d = json.loads(bfs("dump", "super", loopdev, "--json").out)
    assert d["device_size"] == 64 << 20
    Store.open(loopdev).close()


@pytest.mark.parametrize("args,needle", [
    (["--size", "12k"], "too small"),
    (["--size", "64M", "--block-size", "3000"], "power of two"),
    (["--size", "64M", "--block-size", "128k"], "power of two"),
    (["--size", "64M", "--bucket-size", "100k"], "power of two"),
    (["--size", "64M", "--bucket-size", "16M"], "power of two"),
    (["--size", "64M", "--btree-node-size", "1k"], "power of two"),
    (["--size", "64M", "--bucket-size", "64k", "--btree-node-size", "128k"],
     "smaller than the btree node size"),
    (["--size", "64M", "--block-size", "64k", "--bucket-size", "32k"], "smaller than the block"),
    (["--size", "lots"], "invalid"),
    (["--size", "64M", "--uuid", "not-a-uuid"], "invalid UUID"),
    (["--size", "64M", "--label", "x" * 40], "32 bytes"),
])
def test_format_rejects_bad_geometry(bfs, new_image, args, needle):
    img = new_image()
    r = bfs("format", img, *args, check_rc=2)
    assert needle in r.errtext
    assert r.errtext.count("\n") <= 3 and "Traceback" not in r.errtext


def test_missing_image_without_size(bfs, tmp_path):
    r = bfs("format", tmp_path / "new.img", check_rc=2)
    assert "--size" in r.errtext
    assert not (tmp_path / "new.img").exists()


def test_image_path_is_a_directory(bfs, tmp_path):
    r = bfs("format", tmp_path, "--size", "64M", check_rc=6)
    assert "is a directory" in r.errtext
    r = bfs("dump", "super", tmp_path, check_rc=6)
    assert "is a directory" in r.errtext


def test_refuses_existing_bfs_without_force(bfs, formatted):
    img = formatted()
    r = bfs("format", img, check_rc=1)
    assert "already holds a bfs" in r.errtext and "--force" in r.errtext
    bfs("format", img, "--force")


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed")
def test_refuses_existing_ext4_without_force(bfs, tmp_path):
    img = tmp_path / "ext4.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-F", "-q", str(img)], check=True)
    r = bfs("format", img, check_rc=1)
    assert "ext2/3/4" in r.errtext
    bfs("format", img, "--force")
    bfs("dump", "super", img)


def test_image_on_read_only_path(bfs, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs")
        try:
            with open(ro / "existing.img", "wb") as f:
                f.truncate(64 << 20)
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            r = bfs("format", ro / "new.img", "--size", "64M", check_rc=6)
            assert "Read-only" in r.errtext or "read-only" in r.errtext
            r = bfs("format", ro / "existing.img", check_rc=6)
            assert "cannot open for writing" in r.errtext
        finally:
            subprocess.run(["umount", str(ro)], capture_output=True)
    else:
        os.chmod(ro, 0o555)
        r = bfs("format", ro / "new.img", "--size", "64M", check_rc=6)
        assert "ermission" in r.errtext


def test_dump_super_on_zero_length_file(bfs, tmp_path):
    p = tmp_path / "empty.img"
    p.write_bytes(b"")
    r = bfs("dump", "super", p, check_rc=3)
    assert "too small" in r.errtext


def test_dump_super_on_random_bytes(bfs, tmp_path):
    p = tmp_path / "random.img"
    p.write_bytes(os.urandom(1 << 20))
    r = bfs("dump", "super", p, check_rc=3)
    assert "not a bfs image" in r.errtext


@pytest.mark.damaged
def test_dump_super_on_truncated_image(bfs, formatted):
    img = formatted()
    with open(img, "r+b") as f:
        f.truncate(8192)
    r = bfs("dump", "super", img)
    assert "truncated" in r.errtext
    with open(img, "r+b") as f:
        f.truncate(4096 + 300)   # the header survives, its fields do not
    r = bfs("dump", "super", img, check_rc=3)
    assert "no valid superblock" in r.errtext
    with open(img, "r+b") as f:
        f.truncate(4200)
    r = bfs("dump", "super", img, check_rc=3)
    assert "too small" in r.errtext


@pytest.mark.damaged
def test_bad_primary_checksum_falls_back_to_backup(bfs, formatted):
    img = formatted()
    corrupt_primary_superblock(img)
    r = bfs("dump", "super", img)
    assert "primary superblock unusable" in r.errtext
    assert "bad checksum" in r.text
    d = json.loads(bfs("dump", "super", img, "--json").out)
    assert d["layout"]["read_from"] != 4096
    assert d["layout"]["copies"][0]["status"] == "bad checksum"


def test_unknown_incompat_feature_refuses_to_open(bfs, formatted):
    img = formatted()
    rewrite_superblock(img, lambda sb: setattr(sb, "features_incompat",
                                               sb.features_incompat | (1 << 40)))
    d = json.loads(bfs("dump", "super", img, "--json").out)
    assert "unknown(0x10000000000)" in d["features_incompat"]
    with pytest.raises(UnsupportedFeatureError, match="incompatible features unknown"):
        Store.open(str(img), write=True)
    rewrite_superblock(img, lambda sb: setattr(sb, "features_incompat",
                                               sb.features_incompat & ~(1 << 40)))


def test_unknown_ro_compat_feature_allows_reading_only(formatted):
    img = formatted()
    rewrite_superblock(img, lambda sb: setattr(sb, "features_ro_compat",
                                               sb.features_ro_compat | (1 << 20)))
    Store.open(str(img)).close()
    with pytest.raises(UnsupportedFeatureError, match="can be read but not written"):
        Store.open(str(img), write=True)
    rewrite_superblock(img, lambda sb: setattr(sb, "features_ro_compat",
                                               sb.features_ro_compat & ~(1 << 20)))


def test_help_of_every_command(bfs):
    from bfs_tools.cli.main import COMMANDS

    assert "format" in bfs("--help").text
    for name in COMMANDS:
        try:
            __import__(f"bfs_tools.cli.{COMMANDS[name][0]}")
        except ModuleNotFoundError:
            continue
        r = bfs(name, "--help")
        assert "Usage:" in r.text


def test_unknown_option_is_a_usage_error(bfs, formatted):
    r = bfs("dump", "super", formatted(), "--bogus", check_rc=2)
    assert "no such option" in r.errtext.lower()
