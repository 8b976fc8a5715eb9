"""codec.field_unpacker: a few fields of a record decode as the full record does;
codec.field_spans: where each field's bytes are."""

from __future__ import annotations

import random
import struct

import pytest

from bfs_tools import codec
from bfs_tools.layouts import LAYOUTS


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_field_unpacker_agrees_with_record(name):
    rec = codec.record(name)
    names = rec._fields
    rng = random.Random(name)
    for _ in range(50):
        wanted = tuple(n for n in names if rng.random() < 0.4) or names[:1]
        unpack = codec.field_unpacker(name, *wanted)
        buf = rng.randbytes(rec.SIZE + rng.randrange(4))
        full = rec.unpack(buf)
        assert unpack(buf) == tuple(getattr(full, n) for n in wanted)


def test_field_unpacker_refuses_unknown_or_unordered_fields():
    with pytest.raises(ValueError):
        codec.field_unpacker("InodeValue", "nlink", "mode")
    with pytest.raises(ValueError):
        codec.field_unpacker("InodeValue", "no_such_field")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_field_spans_hold_each_fields_bytes(name):
    """Each field's bytes, at its span, decode alone to its value."""
    rec = codec.record(name)
    buf = random.Random(name).randbytes(rec.SIZE)
    full = rec.unpack(buf)
    spans = codec.field_spans(name)
    assert list(spans) == list(rec._fields)
    fmt = rec.STRUCT.format
    codes = [c for c in codec._format_codes(fmt) if not c.endswith("x")]
    for (field, (start, end)), code in zip(spans.items(), codes, strict=True):
        assert struct.unpack(fmt[0] + code, buf[start:end])[0] == getattr(full, field)
    assert max(end for _start, end in spans.values()) <= rec.SIZE
