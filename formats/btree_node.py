"""Btree nodes: a header, then one or more bsets (log-structured node).

A node occupies `btree_node_size` bytes inside a btree bucket. The first write
puts the header and the first bset; later writes append further bsets at block
boundaries in the unused tail, each with its own checksum and the highest
journal seq whose keys it contains. Reading merges all valid bsets in order
(newer keys win, `deleted` keys remove). A bset whose node_seq differs from the
header's is stale data from an earlier use of the space and ends the node.
"""

from construct import Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

from .bkey import Bpos

NodeHeader = Struct(
    "csum" / Int64ul * "checksum of the rest of this header",
    "magic" / Int64ul * "BTREE_NODE_MAGIC xor the first 8 bytes of the internal UUID",
    "node_seq" / Int64ul * "random id of this node instance; every bset repeats it",
    "btree_id" / Int8ul * "BtreeId",
    "level" / Int8ul * "0 = leaf; interior nodes hold btree_ptr keys",
    Padding(2),
    "pad" / Int32ul * "reserved, 0",
    "min_key" / Bpos * "smallest position this node may hold",
    "max_key" / Bpos * "largest position this node may hold (inclusive)",
)

NODE_HEADER_SIZE = NodeHeader.sizeof()

BsetHeader = Struct(
    "csum" / Int64ul * "checksum of the rest of the bset header and its keys",
    "magic" / Int64ul * "BSET_MAGIC xor the first 8 bytes of the internal UUID",
    "node_seq" / Int64ul * "node_seq of the node this bset belongs to",
    "journal_seq" / Int64ul * "highest journal seq whose updates this bset contains",
    "bytes" / Int32ul * "bytes of keys following this header",
    "nkeys" / Int32ul * "number of keys (sorted by position, no duplicates)",
)

BSET_HEADER_SIZE = BsetHeader.sizeof()

BtreePtrValue = Struct(
    "sector" / Int64ul * "device sector where the child node starts",
    "node_seq" / Int64ul * "node_seq the child must carry",
    "gen" / Int8ul * "generation of the child's bucket when the node was written",
    "level" / Int8ul * "level of the child node",
    "pad" / Int16ul * "reserved, 0",
    "sectors_written" / Int32ul * "sectors of the child that hold valid bsets (hint)",
    "min_key" / Bpos * "smallest position of the child (the key position is its max)",
)
