"""The declarations in formats/: every schema round-trips, the derived codecs agree
with construct byte for byte, and the generated files are current."""

from __future__ import annotations

import random
from pathlib import Path

import construct as cs
import pytest
from bfs_tools.formats import bkey, btree_node, ids, journal, superblock

from bfs_tools import codec, formats_gen

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = formats_gen.schemas()


def sample(sc: cs.Construct, rng: random.Random, ctx: dict):
    """A random valid value for schema `sc` (lengths of variable fields kept consistent)."""
    sc = formats_gen.unwrap(sc)
    if isinstance(sc, cs.Struct):
        out = {}
        for sub in sc.subcons:
            if sub.name is None:
                continue
            out[sub.name] = sample(sub, rng, out)
        return out
    if isinstance(sc, cs.FormatField):
        size = sc.sizeof()
        signed = sc.fmtstr[1].islower()
        bits = 8 * size
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        return rng.randint(lo, hi)
    if isinstance(sc, cs.Const):
        return sc.value
    if isinstance(sc, cs.Bytes):
        n = sc.length if isinstance(sc.length, int) else None
        if n is None:
            return rng.randbytes(rng.randint(0, 20))
        return rng.randbytes(n)
    if sc is cs.GreedyBytes or type(sc).__name__ == "GreedyBytes":
        return rng.randbytes(rng.randint(0, 20))
    if isinstance(sc, cs.Array):
        count = sc.count if isinstance(sc.count, int) else rng.randint(0, 3)
        return [sample(sc.subcon, rng, ctx) for _ in range(count)]
    if isinstance(sc, cs.GreedyRange):
        return [sample(sc.subcon, rng, ctx) for _ in range(rng.randint(0, 3))]
    raise TypeError(type(sc).__name__)


def fix_lengths(name: str, obj: dict) -> dict:
    """Make length fields agree with the variable fields they describe."""
    if name == "Key":
        obj["header"]["val_len"] = len(obj["value"])
    elif name in ("JsetEntry", "SbField"):
        obj["header"]["bytes"] = len(obj["payload"])
    elif name == "XattrValue":
        obj["name_len"] = len(obj["name"])
        obj["val_len"] = len(obj["value"])
    elif name in ("SbJournalField", "SbBlacklistField", "SbErrorsField"):
        arr = obj.get("buckets", obj.get("ranges", obj.get("entries")))
        obj["nr"] = len(arr)
    elif name == "SbCleanField":
        for e in obj["entries"]:
            e["header"]["bytes"] = len(e["payload"])
    return obj


def strip(obj):
    """construct Containers -> plain data (drop private keys) for comparison."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_parse_build_roundtrip(name):
    _mod, schema = SCHEMAS[name]
    rng = random.Random(name)
    for _ in range(20):
        value = fix_lengths(name, sample(schema, rng, {}))
        raw = schema.build(value)
        parsed = schema.parse(raw)
        assert strip(parsed) == strip(value)
        assert schema.build(parsed) == raw


@pytest.mark.parametrize("name", sorted(n for n, (_m, s) in SCHEMAS.items()
                                        if formats_gen.fixed_size(s) is not None))
def test_fixed_schema_bytes_roundtrip(name):
    """build(parse(b)) == b for random bytes (constants and padding forced valid)."""
    _mod, schema = SCHEMAS[name]
    rng = random.Random(name)
    size = schema.sizeof()
    for _ in range(20):
        raw = bytearray(rng.randbytes(size))
        _force_valid(schema, raw, 0)
        assert schema.build(schema.parse(bytes(raw))) == bytes(raw)


def _force_valid(schema, raw: bytearray, offset: int) -> int:
    sc = formats_gen.unwrap(schema)
    if isinstance(sc, cs.Struct):
        for sub in sc.subcons:
            offset = _force_valid(sub, raw, offset)
        return offset
    size = sc.sizeof()
    if isinstance(sc, cs.Const):
        raw[offset:offset + size] = sc.value
    elif isinstance(sc, cs.Padded):
        raw[offset:offset + size] = bytes(size)
    elif isinstance(sc, cs.Array):
        for _ in range(sc.count):
            offset = _force_valid(sc.subcon, raw, offset)
        return offset
    return offset + size


@pytest.mark.parametrize("name", sorted(codec.LAYOUTS))
def test_fast_codec_agrees_with_construct(name):
    _mod, schema = SCHEMAS[name]
    rec = codec.record(name)
    rng = random.Random(name + "codec")
    for _ in range(50):
        value = fix_lengths(name, sample(schema, rng, {}))
        raw = schema.build(value)
        fast = rec.unpack(raw)
        assert rec.SIZE <= len(raw)
        # decoding agrees field by field, encoding gives the same bytes back
        assert fast.pack() == raw[:rec.SIZE]
        flat = _flatten_value(schema, value)
        assert dict(zip(rec._fields, fast, strict=True)) == {k: flat[k] for k in rec._fields}


def _flatten_value(schema, value, prefix=""):
    sc = formats_gen.unwrap(schema)
    out = {}
    if isinstance(sc, cs.Struct):
        for sub in sc.subcons:
            if sub.name is None:
                continue
            inner = formats_gen.unwrap(sub)
            v = value[sub.name]
            if isinstance(inner, cs.Struct):
                out.update(_flatten_value(inner, v, f"{prefix}{sub.name}_"))
            elif isinstance(inner, cs.Array) and isinstance(inner.count, int):
                for i, item in enumerate(v):
                    if isinstance(formats_gen.unwrap(inner.subcon), cs.Struct):
                        out.update(_flatten_value(inner.subcon, item, f"{prefix}{sub.name}_{i}_"))
                    else:
                        out[f"{prefix}{sub.name}_{i}"] = item
            else:
                out[f"{prefix}{sub.name}"] = v
    return out


def test_layouts_file_is_current():
    current = (ROOT / "bfs_tools" / "layouts.py").read_text()
    assert current == formats_gen.render_layouts(), \
        "bfs_tools/layouts.py is stale: run `make formats-doc`"


def test_format_md_is_current():
    current = (ROOT / "formats" / "FORMAT.md").read_text()
    assert current == formats_gen.render_doc(), "formats/FORMAT.md is stale: run `make formats-doc`"


def test_format_md_documents_every_structure_and_field():
    doc = (ROOT / "formats" / "FORMAT.md").read_text()
    for name, (_m, schema) in SCHEMAS.items():
        assert f"### {name}" in doc
        for sub in schema.subcons:
            if sub.name:
                assert f"| {sub.name} |" in doc, (name, sub.name)
                assert formats_gen.field_doc(sub), f"{name}.{sub.name} has no description"


def test_key_types_allowed_per_btree_cover_every_btree():
    assert set(ids.BTREE_KEY_TYPES) == set(ids.BtreeId)


def test_sizes_are_what_the_code_assumes():
    assert bkey.KEY_HEADER_SIZE == 36
    assert btree_node.NodeHeader.sizeof() == btree_node.NODE_HEADER_SIZE
    assert journal.JSET_HEADER_SIZE == journal.JsetHeader.sizeof()
    assert superblock.SuperblockHeader.sizeof() == 256


def test_formats_imports_nothing_of_bfs_tools():
    import re

    for path in (ROOT / "formats").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(bfs_tools|\.\.)", text, re.M), path.name
