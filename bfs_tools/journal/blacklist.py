"""Journal seq blacklist: bsets stamped with a blacklisted seq are ignored.

After an unclean shutdown every seq after the last flush entry up to the
reserved limit is blacklisted: btree writes may have reached the disk for
journal entries that did not, and must not come back (bcachefs'
journal_seq_blacklist). Ranges are inclusive and kept in the superblock.
"""

from __future__ import annotations

from bisect import bisect_right

MAX_RANGES = 64


class Blacklist:
    def __init__(self, ranges: list[tuple[int, int]] | None = None):
        self.ranges: list[tuple[int, int]] = []
        for start, end in ranges or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end < start:
            return
        merged = []
        for s, e in sorted(self.ranges + [(start, end)]):
            if merged and s <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        # Keep the list bounded: join the closest neighbours (a wider range only
        # makes more stale bsets ignored, never fewer).
        while len(merged) > MAX_RANGES:
            gaps = [(merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1)]
            _, i = min(gaps)
            merged[i:i + 2] = [(merged[i][0], merged[i + 1][1])]
        self.ranges = merged
        self._starts = [s for s, _ in merged]

    def __contains__(self, seq: int) -> bool:
        if not self.ranges:
            return False
        i = bisect_right(self._starts, seq) - 1
        return i >= 0 and seq <= self.ranges[i][1]

    def __bool__(self) -> bool:
        return bool(self.ranges)
