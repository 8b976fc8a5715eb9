"""The exception family of bfs-tools and the exit codes the CLI maps them to.

Each error also subclasses the closest builtin exception where one exists
(FileNotFoundError, FileExistsError, ...) so library callers can catch either.

Exit codes of every command except `check` (which follows fsck(8)):
    0  success
    1  the operation failed (path not found, exists, not empty, read-only, ...)
    2  usage error (click's convention)
    3  the image is damaged or is not a bfs image
    4  no space left on the image
    5  the image is busy (another process holds it)
    6  I/O error on the host (device or destination)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3
EXIT_NOSPACE = 4
EXIT_BUSY = 5
EXIT_IO = 6


class BfsError(Exception):
    """Base of every error bfs-tools raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(BfsError, ValueError):
    """Bad arguments (sizes, names, options) detected beyond click's parsing."""

    exit_code = EXIT_USAGE


class DeviceError(BfsError, OSError):
    """The device or image file cannot be opened, read or written."""

    exit_code = EXIT_IO


class DeviceBusyError(DeviceError):
    """Another process holds the image (lock or O_EXCL)."""

    exit_code = EXIT_BUSY


class NotBfsError(BfsError):
    """The device holds no valid bfs superblock."""

    exit_code = EXIT_DAMAGED


class FormatError(BfsError):
    """A structure read from disk does not match its declaration."""

    exit_code = EXIT_DAMAGED


class ChecksumError(FormatError):
    """A checksum did not match."""


class CorruptionError(FormatError):
    """An invariant of the format is violated; err_id names the fsck error."""

    def __init__(self, message: str, err_id: int | None = None):
        super().__init__(message)
        self.err_id = err_id


class UnsupportedFeatureError(BfsError):
    """The image uses features this version does not know."""

    exit_code = EXIT_DAMAGED


class ReadOnlyError(BfsError, PermissionError):
    """A write was attempted on a read-only open, snapshot or image."""


class NoSpaceError(BfsError, OSError):
    """No free bucket (ENOSPC)."""

    exit_code = EXIT_NOSPACE


class PathError(BfsError):
    """Base of namespace errors; carries the path."""


class NotFoundError(PathError, FileNotFoundError):
    pass


class ExistsError(PathError, FileExistsError):
    pass


class NotADirError(PathError, NotADirectoryError):
    pass


class IsADirError(PathError, IsADirectoryError):
    pass


class NotEmptyError(PathError, OSError):
    pass


class InvalidNameError(PathError, ValueError):
    pass


class CrossDeviceError(PathError, OSError):
    """An operation that must stay inside one subvolume crossed into another."""
