"""Space accounting: absolute u64 counters in the accounting btree.

Key position (AccountingType, subtype, 0); the counters of each type are named
in formats/ids.py ACCOUNTING_COUNTERS. Triggers add deltas to a transaction
(`trans.acct`); at commit they become new absolute values. `df` and
`dump usage` read only these keys.
"""

from __future__ import annotations

import struct

from ..errors import CorruptionError
from ..formats.ids import ACCOUNTING_COUNTERS, AccountingType, BtreeId, DataType, KeyType
from ..keys import Key, Pos, register


def acct_pos(atype: AccountingType, sub: int = 0) -> Pos:
    return (int(atype), sub, 0)


def decode_counters(val: bytes) -> list[int]:
    if len(val) % 8:
        raise CorruptionError(f"accounting value of {len(val)} bytes is not a multiple of 8")
    return list(struct.unpack(f"<{len(val) // 8}Q", val))


def encode_counters(counters: list[int]) -> bytes:
    return struct.pack(f"<{len(counters)}Q", *counters)


def apply_deltas(trans, pos: Pos, deltas: list[int]) -> None:
    cur = trans.get(BtreeId.accounting, pos)
    counters = decode_counters(cur.val) if cur is not None else []
    counters += [0] * (len(deltas) - len(counters))
    for i, d in enumerate(deltas):
        counters[i] += d
        if counters[i] < 0:
            raise CorruptionError(
                f"accounting {_label(pos)} would go negative ({counters[i]}); run bfs check")
    if any(counters):
        trans.update(BtreeId.accounting, Key(pos, KeyType.accounting, encode_counters(counters)))
    elif cur is not None:
        trans.delete(BtreeId.accounting, pos)


def read_counters(btrees, atype: AccountingType, sub: int = 0) -> list[int]:
    k = btrees.get(BtreeId.accounting, acct_pos(atype, sub))
    n = len(ACCOUNTING_COUNTERS.get(atype, ()))
    counters = decode_counters(k.val) if k is not None else []
    return (counters + [0] * n)[:max(n, len(counters))]


def _label(pos: Pos) -> str:
    try:
        atype = AccountingType(pos[0])
    except ValueError:
        return f"type{pos[0]}:{pos[1]}"
    sub = pos[1]
    if atype == AccountingType.data_type:
        try:
            return f"{atype.name}={DataType(sub).name}"
        except ValueError:
            return f"{atype.name}={sub}"
    if atype == AccountingType.btree:
        try:
            return f"{atype.name}={BtreeId(sub).name}"
        except ValueError:
            return f"{atype.name}={sub}"
    if atype == AccountingType.snapshot:
        return f"{atype.name}={sub}"
    return atype.name


def _names(pos: Pos) -> tuple[str, ...]:
    try:
        return ACCOUNTING_COUNTERS[AccountingType(pos[0])]
    except (ValueError, KeyError):
        return ()


def _validate(btree_id: int, k: Key) -> str | None:
    if len(k.val) % 8:
        return "accounting value length not a multiple of 8"
    try:
        AccountingType(k.pos[0])
    except ValueError:
        return f"unknown accounting type {k.pos[0]}"
    return None


def _to_text(k: Key) -> str:
    counters = decode_counters(k.val)
    names = _names(k.pos)
    parts = [f"{names[i] if i < len(names) else i}={c}" for i, c in enumerate(counters)]
    return f"{_label(k.pos)} " + " ".join(parts)


def _to_json(k: Key) -> dict:
    counters = decode_counters(k.val)
    names = _names(k.pos)
    return {"counter": _label(k.pos),
            "counters": {names[i] if i < len(names) else str(i): c for i, c in enumerate(counters)}}


register(KeyType.accounting, validate=_validate, to_text=_to_text, to_json=_to_json)
