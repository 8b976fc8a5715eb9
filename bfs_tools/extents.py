"""Extent-btree values: data extents, inline data, whiteouts, error ranges.

Keys sit at (inum, end sector, snapshot) and cover [end - size, end) sectors of
the file. An `extent` points at a checksummed region on the device and may use
only part of it (`offset` sectors in). Layouts: formats/extents.py.
"""

from __future__ import annotations

from collections import namedtuple

from .checksum import checksum_name
from .codec import field_unpacker, record
from .formats.ids import BtreeId, ChecksumType, KeyType
from .keys import Key, Pos, register

ExtentValue = record("ExtentValue")


# collections.namedtuple rather than typing.NamedTuple: typing costs ~3 ms of
# every command's start-up.
class Extent(namedtuple("Extent", "sector gen csum_type region_sectors offset csum")):
    """A data extent's value. sector: where the checksummed region starts on the
    device; region_sectors: its length; offset: sectors from the region start
    to the key's first sector."""

    __slots__ = ()

    def pack(self) -> bytes:
        return ExtentValue(self.sector, self.gen, self.csum_type, 0, self.region_sectors,
                           self.offset, 0, self.csum).pack()


def decode_extent(val: bytes) -> Extent:
    v = ExtentValue.unpack(val)
    return Extent(v.sector, v.gen, v.csum_type, v.region_sectors, v.offset, v.csum)


def extent_key(pos: Pos, size: int, e: Extent) -> Key:
    return Key(pos, KeyType.extent, e.pack(), size=size)


def cut(k: Key, start: int, end: int) -> Key:
    """The part of extent-btree key `k` covering [start, end) (within its range)."""
    assert k.start <= start < end <= k.end, (k, start, end)
    pos = (k.pos[0], end, k.pos[2])
    if k.type == KeyType.extent:
        e = decode_extent(k.val)
        return Key(pos, k.type, e._replace(offset=e.offset + (start - k.start)).pack(),
                   size=end - start, version=k.version)
    if k.type == KeyType.inline_data:
        lo = (start - k.start) * 512
        hi = (end - k.start) * 512
        return Key(pos, k.type, k.val[lo:hi], size=end - start, version=k.version)
    if k.type == KeyType.reflink_p:
        from .reflink import cut_reflink_p

        return cut_reflink_p(k, start, end)
    return Key(pos, k.type, k.val, size=end - start, version=k.version)


_CSUM_TYPES = frozenset(ChecksumType)


# check validates every extent: only the fields it reads, no Extent made
_validated_fields = field_unpacker("ExtentValue", "sector", "csum_type", "region_sectors",
                                   "offset")


def _validate_extent(btree_id: int, k: Key) -> str | None:
    if len(k.val) != ExtentValue.SIZE:
        return f"extent value of {len(k.val)} bytes, expected {ExtentValue.SIZE}"
    sector, csum_type, region_sectors, offset = _validated_fields(k.val)
    if csum_type not in _CSUM_TYPES:
        return f"unknown checksum type {csum_type}"
    if region_sectors == 0 or offset + k.size > region_sectors:
        return f"extent range outside its region ({offset}+{k.size} > {region_sectors})"
    if sector == 0:
        return "extent pointer to sector 0"
    return None


def _extent_text(k: Key) -> str:
    e = decode_extent(k.val)
    return (f"sector {e.sector} gen {e.gen} region {e.region_sectors} offset {e.offset} "
            f"csum {checksum_name(e.csum_type)}:{e.csum:x}")


def _extent_json(k: Key) -> dict:
    e = decode_extent(k.val)
    return {"sector": e.sector, "gen": e.gen, "region_sectors": e.region_sectors,
            "offset": e.offset, "csum_type": checksum_name(e.csum_type), "csum": f"{e.csum:x}"}


def _validate_inline(btree_id: int, k: Key) -> str | None:
    if len(k.val) > k.size * 512:
        return f"inline data of {len(k.val)} bytes longer than its range ({k.size} sectors)"
    return None


def _inline_text(k: Key) -> str:
    preview = k.val[:16].hex()
    return f"{len(k.val)} bytes {preview}{'...' if len(k.val) > 16 else ''}"


def _validate_empty(btree_id: int, k: Key) -> str | None:
    return "value on an empty key type" if k.val else None


register(KeyType.extent, validate=_validate_extent, to_text=_extent_text, to_json=_extent_json)
register(KeyType.inline_data, validate=_validate_inline, to_text=_inline_text,
         to_json=lambda k: {"bytes": len(k.val), "data": k.val.hex()})
register(KeyType.whiteout, validate=_validate_empty, to_text=lambda k: "", to_json=lambda k: {})
register(KeyType.hash_whiteout, validate=_validate_empty, to_text=lambda k: "",
         to_json=lambda k: {})
register(KeyType.error, validate=_validate_empty, to_text=lambda k: "data lost",
         to_json=lambda k: {"lost": True})

DATA_BTREES = (BtreeId.extents, BtreeId.reflink)
