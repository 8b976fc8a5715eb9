"""`python -m bfs_tools` is `bfs`."""

from .cli.main import entry

entry()
