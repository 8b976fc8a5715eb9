"""bfs-tools: userspace tools for bfs, a bcachefs-style copy-on-write B-tree filesystem."""

__version__ = "0.1.0"
