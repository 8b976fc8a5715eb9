"""Recognise existing data on a device before formatting over it (like wipefs/blkid)."""

from __future__ import annotations

from .device import Device

# (name, byte offset, magic bytes)
SIGNATURES: list[tuple[str, int, bytes]] = [
    ("bfs", 4096, bytes.fromhex("6266737e62747265652d66732100b0f5")),
    ("bfs", 3584, bytes.fromhex("6266736c61796f75742d726563b0f5ee")),
    ("ext2/3/4", 1080, b"\x53\xef"),
    ("btrfs", 65600, b"_BHRfS_M"),
    ("xfs", 0, b"XFSB"),
    ("bcachefs", 4096 + 24, bytes.fromhex("c68573f64e1a45ca8265f57f48ba6d81")),
    ("bcachefs", 4096 + 24, bytes.fromhex("c68573f666ce90a9d96a60cf803df7ef")),
    ("swap", 4086, b"SWAPSPACE2"),
    ("swap", 4086, b"SWAP-SPACE"),
    ("LUKS", 0, b"LUKS\xba\xbe"),
    ("squashfs", 0, b"hsqs"),
    ("iso9660", 32769, b"CD001"),
    ("GPT partition table", 512, b"EFI PART"),
    ("vfat", 82, b"FAT32   "),
    ("vfat", 54, b"FAT16   "),
    ("vfat", 54, b"FAT12   "),
]


def detect(dev: Device) -> list[str]:
    """Names of the known signatures found on `dev`."""
    found: list[str] = []
    head_len = min(dev.size, 65536 + 4096)
    head = dev.read(0, head_len) if head_len else b""
    for name, offset, magic in SIGNATURES:
        end = offset + len(magic)
        if end <= len(head) and head[offset:end] == magic and name not in found:
            found.append(name)
    if len(head) >= 512 and head[510:512] == b"\x55\xaa" and "GPT partition table" not in found:
        # an MBR: four 16-byte partition entries at 446; any with a type byte set
        if any(head[446 + 16 * i + 4] for i in range(4)):
            found.append("MBR partition table")
    return found
