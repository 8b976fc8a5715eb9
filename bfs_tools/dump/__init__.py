"""Renderers for `bfs dump`: superblock, journal, btrees, alloc state, usage."""


def printable(text: str) -> str:
    """Escape control and other non-printable characters (as \\x1b, \\n, ...) so
    text from disk cannot drive the terminal or break the one-line-per-item output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
