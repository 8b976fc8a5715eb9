"""Encoding and decoding of journal entries (jsets) — formats/journal.py."""

from __future__ import annotations

from ..checksum import checksum
from ..codec import record
from ..errors import FormatError
from ..formats.constants import JSET_MAGIC
from ..formats.ids import JsetEntryType, JsetFlags
from ..keys import Key, decode_keys, encode_keys

JsetHeader = record("JsetHeader")
EntryHeader = record("JsetEntryHeader")
Datetime = record("DatetimePayload")


def entry(etype: int, payload: bytes, btree_id: int = 0, level: int = 0) -> bytes:
    return EntryHeader(len(payload), etype, btree_id, level).pack() + payload


def keys_entry(btree_id: int, keys: list[Key]) -> bytes:
    return entry(JsetEntryType.btree_keys, encode_keys(keys), btree_id)


def root_entry(btree_id: int, level: int, ptr_key: Key) -> bytes:
    return entry(JsetEntryType.btree_root, encode_keys([ptr_key]), btree_id, level)


def encode_jset(seq: int, last_seq: int, flags: int, entries: list[bytes], magic64: int,
                csum_type: int, block_size: int) -> bytes:
    body = b"".join(entries)
    head = bytearray(JsetHeader(0, JSET_MAGIC ^ magic64, seq, last_seq, flags, len(body)).pack())
    head[0:8] = checksum(csum_type, bytes(head[8:]) + body).to_bytes(8, "little")
    raw = bytes(head) + body
    return raw + b"\0" * (-len(raw) % block_size)


class JsetEntry:
    __slots__ = ("type", "btree_id", "level", "payload")

    def __init__(self, type: int, btree_id: int, level: int, payload: bytes):
        self.type = type
        self.btree_id = btree_id
        self.level = level
        self.payload = payload

    def __eq__(self, other):
        # replay compares the entries of two jsets with one seq (reader.plan_replay)
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.type, self.btree_id, self.level, self.payload) == (
            other.type, other.btree_id, other.level, other.payload)

    def keys(self) -> list[Key]:
        return decode_keys(self.payload, what=f"journal {JsetEntryType(self.type).name} entry")


class Jset:
    __slots__ = ("seq", "last_seq", "flags", "entries", "ring_idx", "offset", "length")

    def __init__(self, seq: int, last_seq: int, flags: int, entries: list[JsetEntry] | None = None,
                 ring_idx: int = 0, offset: int = 0, length: int = 0):
        self.seq = seq
        self.last_seq = last_seq
        self.flags = flags
        self.entries = [] if entries is None else entries
        self.ring_idx = ring_idx    # where it was found
        self.offset = offset        # byte offset within its bucket
        self.length = length        # bytes on disk, padded

    @property
    def is_flush(self) -> bool:
        return bool(self.flags & JsetFlags.flush)


def decode_entries(body: bytes, where: str) -> list[JsetEntry]:
    out = []
    pos = 0
    while pos < len(body):
        if len(body) - pos < EntryHeader.SIZE:
            raise FormatError(f"{where}: truncated entry header")
        h = EntryHeader.unpack(body, pos)
        pos += EntryHeader.SIZE
        payload = body[pos:pos + h.bytes]
        if len(payload) != h.bytes:
            raise FormatError(f"{where}: entry overruns the jset")
        pos += h.bytes
        out.append(JsetEntry(h.type, h.btree_id, h.level, payload))
    return out


def try_decode_jset(buf: bytes, offset: int, magic64: int, csum_type: int) -> tuple[Jset | None, str]:
    """Decode the jset at buf[offset:]. (None, reason) when there is none or it is bad.

    reason is "" for empty space (no magic) and a message for a damaged entry.
    """
    if len(buf) - offset < JsetHeader.SIZE:
        return None, ""
    h = JsetHeader.unpack(buf, offset)
    if h.magic != JSET_MAGIC ^ magic64:
        return None, ""
    end = offset + JsetHeader.SIZE + h.bytes
    if end > len(buf):
        return None, f"journal entry seq {h.seq} at +{offset}: length {h.bytes} overruns its bucket"
    if checksum(csum_type, buf[offset + 8:end]) != h.csum:
        return None, f"journal entry seq {h.seq} at +{offset}: bad checksum"
    try:
        entries = decode_entries(buf[offset + JsetHeader.SIZE:end], f"journal entry seq {h.seq}")
    except FormatError as e:
        return None, str(e)
    return Jset(h.seq, h.last_seq, h.flags, entries, offset=offset,
                length=end - offset), ""
