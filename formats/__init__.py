"""Declarations of the bfs on-disk format: construct schemas, stable ids, constants.

Only declarations live here: no I/O and no logic, and nothing from the rest of
bfs_tools is imported. Installed as `bfs_tools.formats`. The human-readable
specification formats/FORMAT.md is generated from these modules
(`make formats-doc`).
"""
