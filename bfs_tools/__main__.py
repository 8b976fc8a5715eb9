"""`python -m bfs_tools` is `bfs`."""

from .cli.entry import entry

entry()
