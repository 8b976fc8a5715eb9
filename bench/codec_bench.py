"""Micro-benchmark: key headers decoded per second (goal >= 1,000,000/s).

Compares construct interpreted, construct compiled, and the derived struct
codec that the btree layer uses (bfs_tools.keys.decode_keys).
"""

from __future__ import annotations

import time

from bfs_tools.formats.bkey import Key as KeySchema
from bfs_tools.formats.bkey import KeyHeader
from bfs_tools.formats.ids import KeyType

from bfs_tools.codec import layout
from bfs_tools.keys import Key, decode_keys, encode_keys


def _rate(fn, n: int) -> float:
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best = max(best, n / dt)
    return best


def run(n: int = 200_000) -> list[dict]:
    keys = [Key((4096 + i // 8, i * 8, 0xFFFFFFFF), KeyType.extent, bytes(32), size=8)
            for i in range(n)]
    buf = encode_keys(keys)
    headers = b"".join(buf[i * 68:i * 68 + 36] for i in range(min(n, 20_000)))
    m = len(headers) // 36
    interp = _rate(lambda: [KeyHeader.parse(headers[i * 36:(i + 1) * 36]) for i in range(m)], m)
    compiled_schema = KeyHeader.compile()
    compiled = _rate(lambda: [compiled_schema.parse(headers[i * 36:(i + 1) * 36])
                              for i in range(m)], m)
    header = layout("KeyHeader")[0]

    def headers_only():
        unpack = header.unpack_from
        pos, end, out = 0, len(buf), []
        append = out.append
        while pos < end:
            h = unpack(buf, pos)
            pos += 36 + h[0]
            append(h)
        return out

    fast_headers = _rate(headers_only, n)
    fast = _rate(lambda: decode_keys(buf), n)
    assert len(decode_keys(buf)) == n and KeySchema.parse(buf[:68]).header.val_len == 32
    return [
        {"codec": "construct (interpreted)", "keys_per_s": interp},
        {"codec": "construct (compiled)", "keys_per_s": compiled},
        {"codec": "derived struct codec, key headers", "keys_per_s": fast_headers},
        {"codec": "derived struct codec, whole keys (decode_keys)", "keys_per_s": fast},
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['codec']:45s} {row['keys_per_s']:>12,.0f} keys/s")
