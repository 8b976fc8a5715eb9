"""Checksums behind one function: `checksum(type, data) -> int` (stored as u64).

crc32c uses the crc32c package (SSE4.2 / ARMv8 instructions: ~20 GB/s here,
google-crc32c ~13 GB/s, crcmod's table version ~350 MB/s; unlike google-crc32c
it takes any buffer — a memoryview of a node or of a read buffer is checksummed
without a copy — and releases the GIL on large inputs), crc64 is CRC-64/WE
(the ECMA-182 polynomial) via crcmod, xxhash is xxh3-64.
"""

from __future__ import annotations

from collections.abc import Callable

import xxhash

from .errors import FormatError
from .formats.ids import ChecksumType

_crc64: Callable[[bytes], int] | None = None


def _load_crc32c() -> Callable:
    """crc32c.crc32c, without running the package's __init__: that imports
    importlib.metadata (for its __version__) and an argparse CLI, ~30-50 ms of
    every command's start-up. The extension module is loaded from the package
    directory directly, with importlib.machinery's finder and loader alone
    (importlib.util would add ~1 ms: contextlib, importlib._abc); any surprise
    falls back to the ordinary import."""
    try:
        import os
        import sys
        from importlib.machinery import (
            EXTENSION_SUFFIXES,
            ExtensionFileLoader,
            ModuleSpec,
            PathFinder,
        )

        mod = sys.modules.get("crc32c._crc32c")
        if mod is None:
            spec = PathFinder.find_spec("crc32c")   # locates, does not execute
            where = spec.submodule_search_locations[0]
            for suffix in EXTENSION_SUFFIXES:
                path = os.path.join(where, "_crc32c" + suffix)
                if os.path.exists(path):
                    loader = ExtensionFileLoader("crc32c._crc32c", path)
                    mod = loader.create_module(ModuleSpec("crc32c._crc32c", loader, origin=path))
                    loader.exec_module(mod)
                    break
        return mod.crc32c
    except Exception:   # noqa: BLE001 - any layout change: the documented import
        import crc32c

        return crc32c.crc32c


def _crc64_fn() -> Callable[[bytes], int]:
    global _crc64
    if _crc64 is None:
        import crcmod.predefined

        _crc64 = crcmod.predefined.mkPredefinedCrcFun("crc-64-we")
    return _crc64


def _none(data) -> int:
    return 0


_FUNCS: dict[int, Callable] = {
    ChecksumType.none: _none,
    ChecksumType.crc32c: _load_crc32c(),
    ChecksumType.xxhash: xxhash.xxh3_64_intdigest,
}


def checksum(csum_type: int, data) -> int:
    """Checksum of `data` (bytes-like) with the given ChecksumType."""
    fn = _FUNCS.get(csum_type)
    if fn is None:
        if csum_type == ChecksumType.crc64:
            fn = _FUNCS[ChecksumType.crc64] = _crc64_fn()
        else:
            raise FormatError(f"unknown checksum type {csum_type}")
    return fn(data)


def checksum_name(csum_type: int) -> str:
    try:
        return ChecksumType(csum_type).name
    except ValueError:
        return f"unknown({csum_type})"


def parse_checksum_type(name: str) -> ChecksumType:
    try:
        return ChecksumType[name]
    except KeyError:
        raise FormatError(f"unknown checksum type {name!r}") from None
