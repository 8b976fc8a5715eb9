"""The seeded string hash placing dirents and xattrs (StrHashType.xxh3_seeded).

slot = xxh3_64(name, seed) >> 1: a 63-bit offset, so linear probing (slot + 1,
slot + 2, ...) never wraps. The seed is the directory's (or inode's) hash_seed,
random per directory, so an attacker cannot precompute colliding names.
"""

from __future__ import annotations

import xxhash

_h = xxhash.xxh3_64_intdigest


def name_hash(name: bytes, seed: int) -> int:
    return _h(name, seed) >> 1
