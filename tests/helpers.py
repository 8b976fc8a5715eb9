"""Helpers for tests that damage images on purpose (through the format declarations)."""

from __future__ import annotations

from pathlib import Path

from bfs_tools.formats.constants import SB_OFFSET

from bfs_tools.io.device import FileDevice
from bfs_tools.superblock import encode, read_superblock


def rewrite_superblock(path: Path, mutate, *, offsets=None, reseal: bool = True) -> None:
    """Apply mutate(sb) and rewrite the copies at `offsets` (default: all)."""
    with FileDevice(str(path), write=True) as dev:
        sb = read_superblock(dev).sb
        mutate(sb)
        for off in offsets or sb.offsets:
            raw = bytearray(encode(sb, off))
            if not reseal:
                raw[16] ^= 0xFF  # break the checksum
            dev.write(off, bytes(raw))
        dev.flush()


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def corrupt_primary_superblock(path: Path) -> None:
    flip_byte(path, SB_OFFSET + 40)   # inside the checksummed header
