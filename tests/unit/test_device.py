"""The device layer: image files, block devices, memory and recording devices."""

from __future__ import annotations

import mmap
import os
import stat

import pytest

from bfs_tools.errors import DeviceBusyError, DeviceError, ReadOnlyError
from bfs_tools.io import device
from bfs_tools.io.device import FileDevice, FlushOp, MemoryDevice, RecordingDevice, WriteOp


def test_file_device_read_write_flush(tmp_path):
    p = tmp_path / "a.img"
    with FileDevice(str(p), write=True, create_size=1 << 20) as dev:
        assert dev.size == 1 << 20
        dev.write(4096, b"hello")
        dev.flush()
        assert dev.read(4096, 5) == b"hello"
        with pytest.raises(DeviceError, match="beyond the end"):
            dev.read((1 << 20) - 2, 4)
    assert p.stat().st_size == 1 << 20


def test_second_writer_gets_a_clear_error(tmp_path):
    p = tmp_path / "a.img"
    with FileDevice(str(p), write=True, create_size=65536):
        with pytest.raises(DeviceBusyError, match="busy"):
            FileDevice(str(p), write=True)
        with pytest.raises(DeviceBusyError, match="busy"):
            FileDevice(str(p))


def test_readers_share(tmp_path):
    p = tmp_path / "a.img"
    p.write_bytes(b"\0" * 65536)
    with FileDevice(str(p)), FileDevice(str(p)) as b:
        assert b.read(0, 4) == b"\0" * 4


def test_read_only_open_refuses_writes(tmp_path):
    p = tmp_path / "a.img"
    p.write_bytes(b"\0" * 65536)
    with FileDevice(str(p)) as dev:
        with pytest.raises(ReadOnlyError):
            dev.write(0, b"x")


def test_read_only_file_opens_for_reading_only(tmp_path):
    p = tmp_path / "ro.img"
    p.write_bytes(b"\0" * 65536)
    os.chmod(p, 0o444)
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    with FileDevice(str(p)) as dev:
        assert dev.read(0, 1) == b"\0"
    with pytest.raises(DeviceError, match="cannot open for writing"):
        FileDevice(str(p), write=True)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(DeviceError, match="is a directory"):
        FileDevice(str(tmp_path))


def test_missing_file(tmp_path):
    with pytest.raises(DeviceError, match="no such file"):
        FileDevice(str(tmp_path / "nope"))


def test_discard_punches_holes(tmp_path):
    p = tmp_path / "a.img"
    with FileDevice(str(p), write=True, create_size=4 << 20) as dev:
        dev.write(0, b"\xff" * (4 << 20))
        dev.flush()
        before = os.stat(p).st_blocks
        dev.discard(1 << 20, 2 << 20)
        dev.flush()
        assert dev.read(1 << 20, 4) == b"\0" * 4
    assert os.stat(p).st_blocks < before


def test_discard_frees_whole_pages_a_span_at_a_time(tmp_path, monkeypatch):
    """The pages wholly inside the range lose their data, in mappings of at most
    _PUNCH_SPAN bytes; the partial pages at its ends keep theirs."""
    monkeypatch.setattr(device, "_PUNCH_SPAN", 3 * mmap.PAGESIZE)
    page = mmap.PAGESIZE
    p = tmp_path / "a.img"
    with FileDevice(str(p), write=True, create_size=16 * page) as dev:
        dev.write(0, b"\xff" * (16 * page))
        dev.discard(page + 100, 10 * page)      # pages 2..10 whole, 1 and 11 partly
        data = dev.read(0, 16 * page)
    assert data[:2 * page] == b"\xff" * (2 * page)
    assert data[2 * page:11 * page] == bytes(9 * page)
    assert data[11 * page:] == b"\xff" * (5 * page)


def test_memory_device_is_sparse_and_clonable():
    dev = MemoryDevice(16 << 40)
    dev.write((8 << 40) + 10, b"abc")
    assert dev.read((8 << 40) + 9, 5) == b"\0abc\0"
    assert dev.allocated_bytes() == MemoryDevice.CHUNK
    copy = dev.clone()
    copy.write((8 << 40) + 10, b"xyz")
    assert dev.read((8 << 40) + 10, 3) == b"abc"
    dev.discard(8 << 40, 1 << 20)
    assert dev.read((8 << 40) + 10, 3) == b"\0\0\0"


def test_recording_device_logs_writes_and_flushes():
    inner = MemoryDevice(1 << 20)
    rec = RecordingDevice(inner)
    rec.write(512, b"a" * 512)
    rec.flush()
    rec.write(1024, b"b")
    assert rec.log == [WriteOp(512, b"a" * 512), FlushOp(), WriteOp(1024, b"b")]
    assert inner.read(1024, 1) == b"b"


def test_block_device(loopdev):
    with FileDevice(loopdev, write=True) as dev:
        assert dev.is_block_device
        assert dev.size == 64 << 20
        assert dev.sector_size in (512, 4096)
        dev.write(8192, b"x" * 4096)
        dev.flush()
        assert dev.read(8192, 4096) == b"x" * 4096
        # O_EXCL: a second writer is refused
        with pytest.raises(DeviceBusyError):
            FileDevice(loopdev, write=True)
    assert stat.S_ISBLK(os.stat(loopdev).st_mode)
