"""Inode values: inodes btree, key at (0, inum, snapshot)."""

from construct import Int8ul, Int16ul, Int32ul, Int64sl, Int64ul, Struct

Timespec = Struct(
    "sec" / Int64sl * "seconds since the Unix epoch",
    "nsec" / Int32ul * "nanoseconds (0..999999999)",
)

InodeValue = Struct(
    "mode" / Int32ul * "file type and permission bits (st_mode)",
    "flags" / Int32ul * "InodeFlags",
    "uid" / Int32ul * "owner user id",
    "gid" / Int32ul * "owner group id",
    "nlink" / Int32ul * "number of dirents naming this inode (directories: 2 + subdirectories)",
    "generation" / Int32ul * "reserved, 0",
    "size" / Int64ul * "file size in bytes",
    "sectors" / Int64ul * "sectors of data the file's extents hold",
    "atime" / Timespec * "last access",
    "mtime" / Timespec * "last content modification",
    "ctime" / Timespec * "last status change",
    "btime" / Timespec * "creation (birth)",
    "rdev" / Int64ul * "device number of a character/block device node",
    "hash_seed" / Int64ul * "directories: seed of the string hash placing their dirents and xattrs",
    "str_hash" / Int8ul * "StrHashType of this inode's dirents/xattrs",
    "data_csum" / Int8ul * "ChecksumType for new data of this file",
    "pad" / Int16ul * "reserved, 0",
    "subvol" / Int32ul * "nonzero: this inode is the root directory of that subvolume",
    "dir" / Int64ul * "inode of the directory holding the dirent that names this inode",
    "dir_offset" / Int64ul * "offset (hash slot) of that dirent",
)
