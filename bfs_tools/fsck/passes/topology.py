"""Pass topology: every node of every btree readable and where its parent says.

The walk reads each node through the btree layer, which checks the node's
checksums, magic, node_seq, btree id, level and key range against the pointer,
and that an interior node's children tile its range. A child that fails is cut
out: the pointer now leads to an empty subtree with the same range (the keys
it held are lost; later passes repair what referred to them). A pointer to a
node slot another pointer already leads to (two parents, or one parent twice)
is cut out the same way before the node is read a second time.

Declining a repair here makes the whole check write nothing: the tree in
memory is no longer the image's.
"""

from __future__ import annotations

from ...btree.node import Node
from ...btree.ptr import decode_ptr, make_ptr_key
from ...errors import BfsError, CorruptionError
from ...formats.fsck_errors import BY_ID
from ...formats.ids import BtreeId
from ...keys import fmt_pos, pos_succ


def run(ctx) -> None:
    store = ctx.store
    bt = store.btrees
    for name, msg in store.open_problems:
        if not ctx.report(name, "btree root", msg):
            ctx.state["abort_writes"] = True
    seen: dict[int, str] = {}
    for btree in BtreeId:
        root = bt.roots[btree]
        if root.sector is not None:
            seen[root.sector] = f"{btree.name}:root"
        stack = [root]
        while stack:
            node = stack.pop()
            where = (f"{btree.name}:level {node.level}:[{fmt_pos(node.min_key)}, "
                     f"{fmt_pos(node.max_key)}]")
            if node.problems:
                for err, msg in node.problems:
                    if not ctx.report(err, where, msg):
                        ctx.state["abort_writes"] = True
                node.problems = None
            if node.level == 0:
                continue
            children = []
            for i in range(len(node.keys)):
                k = node.keys[i]
                cwhere = f"{btree.name}:level {node.level - 1}:..{fmt_pos(k.pos)}"
                if node.children[i] is None:
                    # not read yet: is its slot already some other node's?
                    try:
                        sector = decode_ptr(k).sector
                    except BfsError:
                        sector = None
                    if sector is not None and sector in seen:
                        if not ctx.report("btree_node_referenced_twice", cwhere,
                                          f"sector {sector} is also {seen[sector]}; this "
                                          "pointer's range is lost"):
                            ctx.state["abort_writes"] = True
                        _empty_child(bt, node, i)
                        continue
                try:
                    child = bt.child(node, i)
                except BfsError as e:
                    err = BY_ID.get(getattr(e, "err_id", None) or -1)
                    if not isinstance(e, CorruptionError) or err is None:
                        err = BY_ID[20]   # btree_node_unreadable
                    # go on with an empty subtree in memory; if the repair is declined the
                    # check writes nothing at all (the tree in memory is no longer the image's)
                    if not ctx.report(err.name, cwhere, str(e)):
                        ctx.state["abort_writes"] = True
                    _empty_child(bt, node, i)
                    continue
                if child.sector is not None:
                    seen.setdefault(child.sector, cwhere)
                children.append(child)
            stack.extend(reversed(children))


def empty_subtree(btree_id: int, level: int, min_key, max_key) -> Node:
    """A chain of nodes down to an empty leaf, covering [min_key, max_key]."""
    leaf = Node(btree_id, 0, min_key, max_key)
    node = leaf
    for lv in range(1, level + 1):
        ptr = make_ptr_key(max_key, min_key, 0, 0, 0, lv - 1)
        node = Node(btree_id, lv, min_key, max_key, [ptr], [node])
    return node


def _empty_child(bt, parent: Node, idx: int) -> None:
    min_key = parent.min_key if idx == 0 else pos_succ(parent.keys[idx - 1].pos)
    max_key = parent.keys[idx].pos
    sub = empty_subtree(parent.btree_id, parent.level - 1, min_key, max_key)
    _mark_new(bt, sub)
    sub.parent = parent
    parent.children[idx] = sub
    bt._set_child_key(parent, idx, bt._placeholder_ptr(sub))


def _mark_new(bt, node: Node) -> None:
    bt._mark_structural(node)
    if node.children:
        for c in node.children:
            if c is not None:
                c.parent = node
                _mark_new(bt, c)
