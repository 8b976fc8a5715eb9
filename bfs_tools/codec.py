"""Fast record codecs derived from the construct schemas in formats/.

construct interprets a schema field by field (~37k records/s here); hot paths
need millions. bfs_tools/layouts.py holds, for every schema in formats/, the
struct format and the flattened field names of its fixed-size part (generated
by `make formats-doc`, proven current and byte-identical to construct by
tests/unit/test_formats.py). This module turns them into named-tuple record
types, without importing construct (whose import alone costs ~70 ms).

    Rec = record("InodeValue")
    rec = Rec.unpack(buf)          # FormatError if buf is short
    rec.pack()                     # bytes
    Rec.SIZE                       # bytes of the fixed part

    unpack = field_unpacker("InodeValue", "mode", "nlink")
    mode, nlink = unpack(buf)      # only those fields (struct.error if buf is short)
"""

from __future__ import annotations

import struct
from collections import namedtuple

from .errors import FormatError
from .layouts import LAYOUTS

_cache: dict[str, type] = {}


def layout(name: str) -> tuple[struct.Struct, tuple[str, ...], str | None]:
    fmt, names, tail = LAYOUTS[name]
    return struct.Struct(fmt), names, tail


def record(name: str) -> type:
    """The named-tuple record type of schema `name` (its fixed-size part)."""
    rec = _cache.get(name)
    if rec is None:
        rec = _cache[name] = _make_record(name)
    return rec


def _make_record(name: str) -> type:
    st, names, tail = layout(name)
    rec = namedtuple(name, names)
    unpack_from = st.unpack_from
    size = st.size
    new = tuple.__new__
    pack = st.pack

    def unpack(cls, buf, offset: int = 0):
        if len(buf) - offset < size:
            raise FormatError(f"{name}: need {size} bytes, have {max(0, len(buf) - offset)}")
        return new(cls, unpack_from(buf, offset))

    def pack_self(self) -> bytes:
        try:
            return pack(*self)
        except struct.error as e:
            raise FormatError(f"{name}: cannot encode: {e}") from None

    # set on the named tuple itself: a subclass to hold them cost ~15 us per
    # record type, of which every start-up builds some 25
    rec.unpack = classmethod(unpack)
    rec.pack = pack_self
    rec.STRUCT = st
    rec.SIZE = size
    rec.TAIL = tail
    return rec


def field_unpacker(name: str, *wanted: str):
    """unpack_from(buf, offset=0) of only the `wanted` fields of schema `name`'s
    fixed part, in layout order (they must be given in that order). The other
    fields are skipped as pad bytes, so no int object is made for them: a hot
    path that needs 8 of an inode's 24 fields decodes them in less than half
    the time."""
    fmt, names, _tail = LAYOUTS[name]
    codes = _format_codes(fmt)
    if sum(1 for c in codes if not c.endswith("x")) != len(names):
        raise ValueError(f"{name}: cannot map {fmt} to its fields")
    order = [n for n in names if n in wanted]
    if order != list(wanted):
        raise ValueError(f"{name}: fields {wanted} unknown or not in layout order {names}")
    out = [fmt[0]]
    field = iter(names)
    for code in codes:
        if code.endswith("x") or next(field) not in wanted:
            out.append(f"{struct.calcsize(fmt[0] + code)}x")
        else:
            out.append(code)
    st = struct.Struct("".join(out))
    if st.size != struct.calcsize(fmt):
        raise ValueError(f"{name}: partial layout {st.format} differs in size from {fmt}")
    return st.unpack_from


def field_spans(name: str) -> dict[str, tuple[int, int]]:
    """Each field of schema `name`'s fixed part: its (start, end) byte offsets."""
    fmt, names, _tail = LAYOUTS[name]
    spans = {}
    field = iter(names)
    offset = 0
    for code in _format_codes(fmt):
        size = struct.calcsize(fmt[0] + code)
        if not code.endswith("x"):
            spans[next(field)] = (offset, offset + size)
        offset += size
    return spans


def _format_codes(fmt: str) -> list[str]:
    """The codes of a struct format after its byte-order character, one per
    field or run of padding: '<QB3xH' -> ['Q', 'B', '3x', 'H']. (A loop rather
    than a regular expression: `python -m bfs_tools cat` imports no re.)"""
    codes = []
    count = ""
    for ch in fmt[1:]:
        if ch.isdigit():
            count += ch
        elif not ch.isspace():
            codes.append(count + ch)
            count = ""
    return codes
