"""Allocation state: alloc keys per bucket, the freespace index, accounting.

alloc btree: one `alloc` key at (0, bucket, 0) for every bucket that has ever
been used (its generation must survive reuse). A bucket without a key is free
with generation 0.
freespace btree: `set` keys (empty value), extent-like: the key at (0, end, 0)
with size n says buckets [end - n, end) are free.
accounting btree: `accounting` keys at (AccountingType, subtype, 0) holding
absolute u64 counters (see ids.ACCOUNTING_COUNTERS).
"""

from construct import GreedyRange, Int8ul, Int16ul, Int32ul, Int64ul, Struct

AllocValue = Struct(
    "gen" / Int8ul * "bucket generation; bumped when a freed bucket is reused",
    "data_type" / Int8ul * "DataType of what the bucket holds",
    "flags" / Int16ul * "reserved, 0",
    "dirty_sectors" / Int32ul * "live sectors in the bucket (0 with data_type free)",
)

AccountingValue = Struct(
    "counters" / GreedyRange(Int64ul) * "u64 counters, per AccountingType",
)
