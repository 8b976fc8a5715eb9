"""`dump tree`: the node structure of one btree, drawn as a tree.

Each node shows its level, key range, number of keys, fill (bytes of keys over
what a node can hold) and location. Big trees are capped: at most
`max_children` children per node (the first ones and the last one, with
"... K more" between) and `max_nodes` nodes in all; only the nodes shown are read.
"""

from __future__ import annotations

from ..btree.node import Node
from ..formats.ids import BtreeId
from ..keys import fmt_pos
from .btree import fill_percent

MAX_CHILDREN = 16
MAX_NODES = 512


def node_label(node: Node, capacity: int) -> str:
    where = f"sector {node.sector}" if node.sector is not None else "unwritten"
    kind = "leaf" if node.level == 0 else f"level {node.level}"
    keys = "key" if len(node.keys) == 1 else "keys"
    return (f"{kind} {fmt_pos(node.min_key)}..{fmt_pos(node.max_key)}  "
            f"{len(node.keys)} {keys}, {fill_percent(node, capacity):.0f}% full, {where}")


def _shown_children(n: int, max_children: int) -> tuple[list[int], int]:
    """Indexes of the children to show and how many are left out (before the last)."""
    if n <= max_children:
        return list(range(n)), 0
    head = max(1, max_children - 1)
    return list(range(head)) + [n - 1], n - head - 1


def build_tree(store, btree_id: int, *, max_children: int = MAX_CHILDREN,
               max_nodes: int = MAX_NODES):
    """A rich Tree of the btree's nodes (labels are Text: never markup)."""
    from rich.text import Text
    from rich.tree import Tree

    btrees = store.btrees
    capacity = btrees.capacity
    root = btrees.roots[btree_id]
    name = BtreeId(btree_id).name
    depth = root.level + 1
    title = Text(f"btree {name}: {depth} level{'s' if depth > 1 else ''}, "
                 f"node size {store.sb.btree_node_size} bytes", style="bold")
    tree = Tree(title, guide_style="dim")
    budget = [max_nodes]

    def style(node: Node) -> str:
        f = fill_percent(node, capacity)
        return "red" if f > 90 else ("yellow" if f < 25 and node.parent is not None else "")

    def add(parent_tree, node: Node) -> None:
        budget[0] -= 1
        branch = parent_tree.add(Text(node_label(node, capacity), style=style(node)))
        if node.level == 0:
            return
        idxs, skipped = _shown_children(len(node.keys), max_children)
        for pos, i in enumerate(idxs):
            if skipped and pos == len(idxs) - 1:
                branch.add(Text(f"... {skipped} more", style="dim italic"))
            if budget[0] <= 0:
                rest = len(idxs) - pos + (skipped if pos < len(idxs) - 1 else 0)
                branch.add(Text(f"... {rest} more (output capped at {max_nodes} nodes)",
                                style="dim italic"))
                return
            add(branch, btrees.child(node, i))

    add(tree, root)
    return tree


def render_plain(renderable) -> str:
    """Render without colour and without wrapping (for pipes and files)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=4096, markup=False, highlight=False, emoji=False,
            color_system=None, force_terminal=False).print(renderable)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
