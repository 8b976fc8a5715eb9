"""Extended attributes: xattrs btree, key at (inum, hash slot, snapshot)."""

from construct import Bytes, Int8ul, Int16ul, Struct

XattrValue = Struct(
    "x_type" / Int8ul * "XattrType: the namespace prefix (user., trusted., ...)",
    "name_len" / Int8ul * "bytes of name (without the namespace prefix)",
    "val_len" / Int16ul * "bytes of value",
    "name" / Bytes(lambda this: this.name_len) * "attribute name after the prefix",
    "value" / Bytes(lambda this: this.val_len) * "attribute value",
)
