"""Renderers for `bfs dump`: superblock, journal, btrees, alloc state, usage."""
