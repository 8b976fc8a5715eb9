"""`bfs check`: ordered passes over the image, each owning its invariants.

runner.py lists the passes (stable ids) and runs them; context.py holds the
mode and the findings; report.py renders them. Repairs go through ordinary
transactions, so an interrupted repair leaves a consistent image.
"""
