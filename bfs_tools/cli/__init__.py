"""The `bfs` command line: a root group (main.py) and one module per command."""
