"""Transactions: queue updates, run triggers, journal, apply — all or nothing.

    t = store.transaction()
    t.update(BtreeId.inodes, key)       # insert or overwrite at key.pos
    t.delete(BtreeId.dirents, pos)
    t.commit()

Reads through the transaction (`get`, `iter`) see its own queued updates.
At commit, the triggers of every updated key run once, with the committed old
key and the final new key; they may queue updates in btrees later in
TRIGGER_ORDER (alloc keys, freespace, refcounts) and accounting deltas, which
become absolute accounting keys. Then the final keys are journalled and applied
to the btrees. Nothing is applied if a trigger raises. Keys queued with
update_accounted (or, encoded, with update_appended) come with their trigger
effects already added by the caller (a tree copy's bulk path): their triggers
do not run.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from itertools import islice, pairwise
from operator import attrgetter, eq

from .btree.ranges import read_ranges
from .btree.tree import KeyReader
from .errors import FormatError, ReadOnlyError
from .formats.ids import BtreeId, KeyType
from .keys import (
    HEADER_SIZE,
    POS_MAX,
    POS_MIN,
    REGISTRY,
    Key,
    Pos,
    decode_keys,
    deleted_key,
    encode_key,
    encoded_pos,
    fmt_pos,
)

# Triggers may only queue updates in btrees after their own in this order.
TRIGGER_ORDER = [BtreeId.subvolumes, BtreeId.snapshots, BtreeId.snapshot_trees,
                 BtreeId.inodes, BtreeId.dirents, BtreeId.xattrs, BtreeId.deleted_inodes,
                 BtreeId.extents, BtreeId.reflink, BtreeId.alloc, BtreeId.freespace,
                 BtreeId.accounting]

_DELETED = KeyType.deleted
_type_of = attrgetter("type")
_pos_of = attrgetter("pos")
BULK_BUILD_MIN = 512
APPLY_SORTED_MIN = 64   # more keys in one btree: applied leaf by leaf (Btrees.apply_sorted)


def _overlay(leaf, updates: list[Key], positions: list[Pos], deletes: bool) -> list[Key]:
    """The keys of `leaf` with sorted `updates` (at `positions`; `deletes`: some
    are deleted keys, which remove) applied."""
    base = leaf.keys
    if not base or positions[0] > base[-1].pos:
        # all after the leaf's keys (a copy's new indirect extents): no dict, no sort
        if deletes:
            updates = [k for k in updates if k.type != _DELETED]
        return base + updates
    merged = dict(zip(leaf.positions, base, strict=True))
    for k in updates:
        if k.type == _DELETED:
            merged.pop(k.pos, None)
        else:
            merged[k.pos] = k
    return [merged[p] for p in sorted(merged)]


def _sort_checked(btree_id: int, keys: list[Key]) -> tuple[list[Key], list[Pos]]:
    """keys sorted, and their positions; an internal error if one repeats."""
    keys.sort(key=_pos_of)
    positions = list(map(_pos_of, keys))
    if any(map(eq, positions, islice(positions, 1, None))):
        _queued_twice(btree_id, next(a for a, b in pairwise(positions) if a == b))
    return keys, positions


def _queued_twice(btree_id: int, pos: Pos | None = None):
    # its trigger effects were added for the key queued with update_accounted
    what = f"key at {fmt_pos(pos)}" if pos is not None else "a key"
    raise FormatError(f"{what} in btree {BtreeId(btree_id).name} queued twice, once with "
                      "its triggers accounted (internal error)")


class Transaction(KeyReader):
    def __init__(self, store):
        self.store = store
        self.btrees = store.btrees
        self._queues: dict[int, dict[Pos, Key]] = {}   # (`updates`)
        # keys queued with update_accounted, per btree: the caller's lists, put
        # in `_queues` only when the btree is read through the transaction
        # (or `updates` is); an unjournalled commit applies them from here, so
        # the tens of thousands of keys of a tree copy are never hashed into a
        # dict (~10 ms for the standard library)
        self._bulk: dict[int, list[list[Key]]] = {}
        # keys queued with update_appended, per btree: the caller's lists of
        # encoded keys, decoded into `_bulk` only if the btree is read through
        # the transaction or the commit cannot append them as new leaves
        self._encoded: dict[int, list[list[bytes]]] = {}
        # pending positions per btree, in queueing order; sorted when read
        # (_sorted_positions): a bulk copy queues keys all over a btree, and
        # inserting each in order would move all the positions after it
        self._positions: dict[int, list[Pos]] = {}
        self._unsorted: set[int] = set()
        self.acct_deltas: dict[Pos, list[int]] = {}
        self.on_commit: list[Callable[[], None]] = []
        self._processing: int | None = None
        self._done: set[Pos] = set()
        self.deferred_state: dict = {}
        self._new: dict[int, set[Pos]] = {}      # positions known to hold no key
        # per btree, the positions queued with update() (not update_accounted),
        # each once, in queueing order: those whose triggers run at commit.
        # Kept apart so that the triggers of a bulk copy's few such keys do not
        # cost a scan of its tens of thousands of accounted ones.
        self._triggered: dict[int, list[Pos]] = {}
        # the positions of the keys of `_bulk` put in `_queues`, which must not
        # be queued again (a position still in `_bulk` queued again is found
        # when the keys are sorted at commit)
        self._accounted: dict[int, set[Pos]] = {}
        # the btrees where a deleted key was queued: the others are applied
        # without looking for deleted keys among theirs (a pass over them all)
        self._deletes: set[int] = set()
        self._before: dict[int, list[Callable]] = {}
        self.committed = False

    # ------------------------------------------------------------------ reads

    @property
    def updates(self) -> dict[int, dict[Pos, Key]]:
        """The queued keys, {btree id: {position: key}} (deleted keys included)."""
        self._absorb_all()
        return self._queues

    def get(self, btree_id: int, pos: Pos) -> Key | None:
        if self._bulk or self._encoded:
            self._absorb(btree_id)
        pending = self._queues.get(btree_id)
        if pending is not None:
            k = pending.get(pos)
            if k is not None:
                return None if k.type == _DELETED else k
        return self.btrees.get(btree_id, pos)

    def _sorted_positions(self, btree_id: int) -> list[Pos] | None:
        positions = self._positions.get(btree_id)
        if btree_id in self._unsorted:
            positions.sort()
            self._unsorted.discard(btree_id)
        return positions

    @property
    def _sorted(self) -> dict[int, list[Pos]]:
        """The pending positions of every btree, sorted."""
        self._absorb_all()
        for btree_id in list(self._unsorted):
            self._sorted_positions(btree_id)
        return self._positions

    def _pending_range(self, btree_id: int, start: Pos, end: Pos) -> list[Key]:
        if self._bulk or self._encoded:
            self._absorb(btree_id)
        positions = self._sorted_positions(btree_id)
        if not positions:
            return []
        pending = self._queues[btree_id]
        return [pending[p] for p in positions[bisect_left(positions, start):
                                              bisect_right(positions, end)]]

    def iter(self, btree_id: int, start: Pos = POS_MIN, end: Pos = POS_MAX) -> Iterator[Key]:
        """Keys in [start, end], committed state overlaid with queued updates."""
        mine = self._pending_range(btree_id, start, end)
        base = self.btrees.iter(btree_id, start, end)
        if not mine:
            yield from base
            return
        i = 0
        n = len(mine)
        for k in base:
            while i < n and mine[i].pos < k.pos:
                if mine[i].type != _DELETED:
                    yield mine[i]
                i += 1
            if i < n and mine[i].pos == k.pos:
                if mine[i].type != _DELETED:
                    yield mine[i]
                i += 1
                continue
            yield k
        while i < n:
            if mine[i].type != _DELETED:
                yield mine[i]
            i += 1

    def iter_reverse(self, btree_id: int, start: Pos = POS_MAX, end: Pos = POS_MIN) -> Iterator[Key]:
        mine = self._pending_range(btree_id, end, start)
        base = self.btrees.iter_reverse(btree_id, start, end)
        if not mine:
            yield from base
            return
        i = len(mine) - 1
        for k in base:
            while i >= 0 and mine[i].pos > k.pos:
                if mine[i].type != _DELETED:
                    yield mine[i]
                i -= 1
            if i >= 0 and mine[i].pos == k.pos:
                if mine[i].type != _DELETED:
                    yield mine[i]
                i -= 1
                continue
            yield k
        while i >= 0:
            if mine[i].type != _DELETED:
                yield mine[i]
            i -= 1

    def read_ranges(self, btree_id: int, ranges) -> Iterator[list[Key]]:
        """[keys in [start, end]] for each (start, end) of `ranges`, ascending:
        leaf after leaf (btree/ranges.py) while this transaction has queued
        nothing in the btree, else iter() per range. Queue nothing in the btree
        before the last range is read."""
        if not self._positions.get(btree_id) and btree_id not in self._bulk and \
                btree_id not in self._encoded:
            return read_ranges(self.btrees, btree_id, ranges)
        return (list(self.iter(btree_id, start, end)) for start, end in ranges)

    # ------------------------------------------------------------------ writes

    def update(self, btree_id: int, key: Key) -> None:
        if self._processing is not None:
            order = TRIGGER_ORDER.index(btree_id)
            if order < self._processing or (order == self._processing and key.pos in self._done):
                raise FormatError(f"trigger updated btree {BtreeId(btree_id).name} out of order "
                                  "(internal error)")
        pending = self._queues.get(btree_id)
        if pending is None:
            pending = self._new_queue(btree_id)
        pos = key.pos
        prev = pending.get(pos)
        if prev is None:
            positions = self._positions[btree_id]
            if positions and pos < positions[-1]:
                self._unsorted.add(btree_id)
            positions.append(pos)
            self._triggered[btree_id].append(pos)
        elif self._accounted and pos in self._accounted.get(btree_id, ()):
            _queued_twice(btree_id, pos)
        if key.type == _DELETED:
            self._deletes.add(btree_id)
        pending[pos] = key

    def delete(self, btree_id: int, pos: Pos) -> None:
        self.update(btree_id, deleted_key(pos))

    def update_new(self, btree_id: int, key: Key) -> None:
        """update() of a position the caller knows holds no key yet (a new inode's
        keys): its triggers then run without looking the old key up."""
        self.update(btree_id, key)
        new = self._new.get(btree_id)
        if new is None:
            new = self._new[btree_id] = set()
        new.add(key.pos)

    def update_accounted(self, btree_id: int, keys: list[Key]) -> None:
        """Queue `keys`, whose trigger effects the caller has already added to this
        transaction in aggregate (accounting deltas, refcounts, bucket sectors):
        run_triggers skips them. A tree copy's bulk path (remap.py) does this for
        its tens of thousands of keys, whose triggers would run one call per key
        to sum the same few counters. Each position must not be queued already,
        nor again later (its accounted effect would be wrong then): that is an
        internal error, raised when the btree is next read through the
        transaction or at commit. The list is kept (not copied) until the
        commit: do not change it."""
        if self._processing is not None:
            raise FormatError("update_accounted inside triggers (internal error)")
        if btree_id not in self._queues:
            self._new_queue(btree_id)
        if _DELETED in set(map(_type_of, keys)):
            self._deletes.add(btree_id)
        self._bulk.setdefault(btree_id, []).append(keys)

    def update_appended(self, btree_id: int, encoded: list[bytes]) -> None:
        """update_accounted() of new keys given encoded (keys.encode_key's form),
        ascending, each position past every key the btree holds and every other
        key queued in it: a tree copy's new inodes, dirents and extents. An
        unjournalled commit writes them as new leaves (Btrees.append_encoded)
        without making Key objects of them; when it cannot, or the btree is
        read through the transaction, they are decoded and queued as
        update_accounted's keys are. The list is kept (not copied) until the
        commit: do not change it."""
        if self._processing is not None:
            raise FormatError("update_appended inside triggers (internal error)")
        if not encoded:
            return
        if btree_id not in self._queues:
            self._new_queue(btree_id)
        self._encoded.setdefault(btree_id, []).append(encoded)

    def _decode_appended(self, btree_id: int) -> None:
        """The keys of update_appended in `btree_id`, decoded into `_bulk`."""
        for encoded in self._encoded.pop(btree_id, ()):
            self._bulk.setdefault(btree_id, []).append(decode_keys(b"".join(encoded)))

    def _absorb(self, btree_id: int) -> None:
        """Put the keys queued with update_accounted (or update_appended) in
        `btree_id` in its queue (a read of the btree through the transaction
        needs them there)."""
        if btree_id in self._encoded:
            self._decode_appended(btree_id)
        batches = self._bulk.pop(btree_id, None)
        if batches is None:
            return
        pending = self._queues[btree_id]
        accounted = self._accounted.setdefault(btree_id, set())
        for keys in batches:
            positions = list(map(_pos_of, keys))
            size = len(pending)
            pending.update(zip(positions, keys, strict=True))
            if len(pending) != size + len(positions):
                _queued_twice(btree_id)
            accounted.update(positions)
            self._positions[btree_id] += positions
        self._unsorted.add(btree_id)    # (sorting sorted runs costs a pass, as checking)

    def _absorb_all(self) -> None:
        for btree_id in {*self._bulk, *self._encoded}:
            self._absorb(btree_id)

    def _new_queue(self, btree_id: int) -> dict[Pos, Key]:
        self._positions[btree_id] = []
        self._triggered[btree_id] = []
        pending = self._queues[btree_id] = {}
        return pending

    def pending_new(self, btree_id: int, pos: Pos) -> Key | None:
        """The key queued at pos if the position held no key before this
        transaction (queued with update_new), else None."""
        new = self._new.get(btree_id)
        if new is None or pos not in new:
            return None
        k = self._queues[btree_id].get(pos)
        return None if k is None or k.type == _DELETED else k

    def before(self, btree_id: int, fn: Callable[[Transaction], None]) -> None:
        """Run fn(trans) once, just before the triggers of `btree_id` run."""
        fns = self._before.setdefault(btree_id, [])
        if fn not in fns:
            fns.append(fn)

    def acct(self, pos: Pos, deltas: list[int]) -> None:
        """Add `deltas` to the counters of the accounting key at `pos`."""
        cur = self.acct_deltas.get(pos)
        if cur is None:
            self.acct_deltas[pos] = list(deltas)
        else:
            for i, d in enumerate(deltas):
                if i < len(cur):
                    cur[i] += d
                else:
                    cur.append(d)

    @property
    def nr_updates(self) -> int:
        return (sum(len(p) for p in self._queues.values())
                + sum(len(keys) for batches in self._bulk.values() for keys in batches)
                + sum(len(keys) for lists in self._encoded.values() for keys in lists))

    def queued_bytes_over(self, limit: int) -> bool:
        """Do the queued keys take more than `limit` bytes (headers and values)?
        Counted only until they do, and without putting the keys queued with
        update_accounted in `updates` (which a read of it does)."""
        size = 0
        for pending in self._queues.values():
            for k in pending.values():
                size += HEADER_SIZE + len(k.val)
                if size > limit:
                    return True
        for batches in self._bulk.values():
            for keys in batches:
                for k in keys:
                    size += HEADER_SIZE + len(k.val)
                    if size > limit:
                        return True
        for lists in self._encoded.values():
            for encoded in lists:
                size += sum(map(len, encoded))
                if size > limit:
                    return True
        return False

    # ------------------------------------------------------------------ commit

    def run_triggers(self) -> None:
        get = self.btrees.get
        for order, btree_id in enumerate(TRIGGER_ORDER):
            self._processing = order
            done = self._done = set()
            for fn in self._before.pop(btree_id, []):
                fn(self)
            queued = self._triggered.get(btree_id)
            if not queued:
                continue
            pending = self._queues[btree_id]
            known_new = self._new.get(btree_id, ())
            # the triggers may queue more keys in this btree (at positions not
            # done yet): appended to `queued`, this loop reaches them too
            for pos in queued:
                done.add(pos)
                new = pending[pos]
                old = None if pos in known_new else get(btree_id, pos)
                fns = REGISTRY[old.type].triggers if old is not None else []
                if new.type != _DELETED:
                    extra = REGISTRY[new.type].triggers
                    if extra and extra is not fns:
                        fns = fns + [f for f in extra if f not in fns]
                for fn in fns:
                    fn(self, btree_id, old, None if new.type == _DELETED else new)
        self._processing = None
        self._materialise_accounting()

    def _sorted_keys(self, btree_id: int) -> tuple[list[Key], list[Pos]]:
        """The keys queued in a btree, and their positions, in position order."""
        pending = self._queues[btree_id]
        batches = self._bulk.pop(btree_id, None)
        if batches is None:
            positions = self._sorted_positions(btree_id)
            return list(map(pending.__getitem__, positions)), positions
        # keys queued with update_accounted and not read since: sorted with the
        # others as they are (the dict of `_absorb` would cost more than the sort)
        keys = list(pending.values())
        for more in batches:
            keys += more
        return _sort_checked(btree_id, keys)

    def _appended(self, btree_id: int, keys: list[Key],
                  positions: list[Pos]) -> tuple[list[Key], list[Pos], list[bytes] | None]:
        """(keys, positions, encoded): the keys of update_appended in `btree_id`
        apart (`encoded`) when they come after the other keys queued there. A
        few other keys among them (a copy's symlinks, copied files: their data
        keys are queued the usual way) are encoded into their places in
        `encoded`; more, or deleted ones, and the appended keys are decoded
        and sorted in with the others instead."""
        lists = self._encoded.pop(btree_id, None)
        if not lists:
            return keys, positions, None
        encoded = lists[0] if len(lists) == 1 else [e for one in lists for e in one]
        cut = bisect_left(positions, encoded_pos(encoded[0]))
        if cut == len(positions):
            return keys, positions, encoded
        tail = keys[cut:]
        if len(tail) <= min(256, len(encoded) // 64) and \
                _DELETED not in set(map(_type_of, tail)):
            encoded = list(encoded)     # (the caller's list stays as given)
            for k in tail:
                i = bisect_left(encoded, k.pos, key=encoded_pos)
                if i < len(encoded) and encoded_pos(encoded[i]) == k.pos:
                    _queued_twice(btree_id, k.pos)
                encoded.insert(i, encode_key(k))
            return keys[:cut], positions[:cut], encoded
        return *_sort_checked(btree_id, keys + decode_keys(b"".join(encoded))), None

    def _materialise_accounting(self) -> None:
        from .alloc.accounting import apply_deltas

        for pos, deltas in self.acct_deltas.items():
            if any(deltas):
                apply_deltas(self, pos, deltas)
        self.acct_deltas = {}

    def commit(self, *, run_triggers: bool = True, journal: bool | None = None) -> None:
        """Run triggers, journal and apply. `journal=False` writes the updates only
        to btree nodes (written before the next commit point): for bulk loads."""
        store = self.store
        if store.read_only:
            raise ReadOnlyError("image opened read-only")
        if self.committed:
            raise FormatError("transaction committed twice (internal error)")
        if run_triggers:
            self.run_triggers()
        elif self.acct_deltas:
            self._materialise_accounting()
        self.committed = True
        if not self._queues:
            for fn in self.on_commit:
                fn()
            return
        jrnl = store.journal
        if journal is not False:    # (the sizes decide nothing for an unjournalled one)
            sizes = [HEADER_SIZE + len(k.val) for p in self.updates.values()
                     for k in p.values()]
            size = sum(sizes)
            if journal is None:
                journal = size <= store.journal_capacity() // 4
            # Fix (journal deadlock, see Journal.room): journal only what surely
            # fits before the bucket kept for the next flush entry.
            if journal and (max(sizes) > jrnl.max_size // 2
                            or size + 16 * len(self._queues) > jrnl.room()):
                journal = False
        # every btree's keys in order (leaf after leaf), all before any is applied
        batches = [(btree_id, *self._appended(btree_id, *self._sorted_keys(btree_id)))
                   for btree_id in self._queues]
        if not journal:
            store.prepare_unjournalled()   # fix: older journal keys must not replay over these
        seq = jrnl.seq
        jrnl.trans_start = seq
        try:
            if journal:
                for btree_id, pending in self._queues.items():
                    jrnl.add_keys(btree_id, list(pending.values()))
            store.journal_reserve(jrnl.seq)
            for btree_id, keys, positions, encoded in batches:
                deletes = btree_id in self._deletes
                if keys:
                    self._apply(btree_id, keys, positions, deletes, seq, journal)
                if encoded and not self.btrees.append_encoded(btree_id, encoded, seq):
                    keys = decode_keys(b"".join(encoded))
                    self._apply(btree_id, keys, list(map(_pos_of, keys)), False, seq, journal)
        finally:
            jrnl.trans_start = 0
        self.btrees.flush_moves()
        for fn in self.on_commit:
            fn()
        store.after_transaction()

    def _apply(self, btree_id: int, keys: list[Key], positions: list[Pos], deletes: bool,
               seq: int, journal: bool) -> None:
        """Apply sorted keys (at `positions`; `deletes`: some are deleted keys)."""
        root = self.btrees.roots[btree_id]
        if not journal and root.level == 0 and len(keys) > BULK_BUILD_MIN:
            # a large import into a btree that is one leaf: build it bottom-up
            self.btrees.bulk_build(btree_id, _overlay(root, keys, positions, deletes), seq)
        elif len(keys) > APPLY_SORTED_MIN:
            self.btrees.apply_sorted(btree_id, keys, seq, journal, positions, deletes)
        else:
            self.btrees.apply_many(btree_id, keys, seq, journal)
