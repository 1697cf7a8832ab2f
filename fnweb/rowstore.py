"""Where a process keeps its captured rows: in memory, or in a float16 file mapped into memory.

``row_store(tokens, channels, dtype, folder)`` gives a ``RowStore`` whose ``matrix`` is
the (tokens, channels) activation matrix. Without a folder it is plain memory. With
one, it is a file in that folder, mapped shared into the process: the capture writes
rows into the mapping, the decomposition's passes read them back a row block at a time,
and ``release`` hands pages already written or read back to the page cache (the kernel
writes them to the file when it needs the memory), so the process's resident memory
stays at a few row blocks however many tokens it holds. Before any work the folder is
checked (it exists or can be made, can be written, has room: the file's space is
reserved at once, so a full disk says so now and not mid-capture). The file is unlinked
as soon as it is mapped: it has no name on disk while the build runs, and its space
returns when the process ends, whether it finished, failed, was stopped or killed.

It knows nothing about models or what the rows mean.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .errors import FnwebError

_GB = 1e9
_RAW = {2: np.uint16, 4: np.float32}  # numpy holds the bytes; torch views them as the storage dtype


class RowStore:
    """A (tokens, channels) matrix in memory; ``release`` is a no-op here."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    @property
    def mapped(self) -> bool:
        return False

    def release(self, start: int, stop: int) -> None:
        """Rows ``start:stop`` are written or read for now: their pages may go (a mapped file only)."""

    def close(self) -> None:
        self.matrix = None


class MappedRowStore(RowStore):
    """A (tokens, channels) matrix in an unlinked file, mapped shared."""

    def __init__(self, handle: mmap.mmap, tokens: int, channels: int, dtype: torch.dtype):
        self._map = handle
        self._row_bytes = channels * torch.empty((), dtype=dtype).element_size()
        raw = np.frombuffer(handle, dtype=_RAW[self._row_bytes // channels], count=tokens * channels)
        super().__init__(torch.from_numpy(raw).view(dtype).view(tokens, channels))

    @property
    def mapped(self) -> bool:
        return True

    def release(self, start: int, stop: int) -> None:
        begin = (start * self._row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        end = stop * self._row_bytes
        if end > begin and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, begin, end - begin)  # shared file pages stay in the page cache

    def close(self) -> None:
        self.matrix = None
        try:
            self._map.close()
        except BufferError:  # a view is still held somewhere: the mapping goes when it does
            pass


@contextmanager
def row_store(tokens: int, channels: int, dtype: torch.dtype, folder: Optional[str | Path] = None,
              label: str = "") -> Iterator[RowStore]:
    """The matrix for ``tokens`` rows: in memory, or (``folder``) a mapped file that is gone when the block ends."""
    if folder is None:
        store = RowStore(torch.empty((tokens, channels), dtype=dtype))
    else:
        store = _mapped(Path(folder).expanduser(), tokens, channels, dtype, label)
    try:
        yield store
    finally:
        store.close()


def file_bytes(tokens: int, channels: int, dtype: torch.dtype) -> int:
    return tokens * channels * torch.empty((), dtype=dtype).element_size()


def check_folder(folder: str | Path, needed: int = 0) -> Path:
    """The folder, made if missing, writable, with ``needed`` bytes free; else a FnwebError saying what to change."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FnwebError(f"The memory-map folder {folder} cannot be made ({exc.strerror}): "
                         "name a folder you can write to.") from exc
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise FnwebError(f"The memory-map folder {folder} cannot be written: name a folder you can write to.")
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FnwebError(f"The memory-map folder {folder} has {free / _GB:.2f} GB free; this process's rows need "
                         f"{needed / _GB:.2f} GB. Free space there, name another folder, use fewer tokens or "
                         "more processes on other disks.")
    return folder


def _mapped(folder: Path, tokens: int, channels: int, dtype: torch.dtype, label: str) -> MappedRowStore:
    size = file_bytes(tokens, channels, dtype)
    check_folder(folder, size)
    descriptor, name = tempfile.mkstemp(prefix=f".fnweb-rows{label}-", suffix=".bin", dir=folder)
    try:
        _reserve(descriptor, size, folder)
        handle = mmap.mmap(descriptor, max(size, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(descriptor)
        _unlink(name)  # from here on the file has no name: nothing to clean up, whatever happens
    return MappedRowStore(handle, tokens, channels, dtype)


def _reserve(descriptor: int, size: int, folder: Path) -> None:
    """Claim the file's space now, so that a full disk fails here and not as a fault mid-capture."""
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(descriptor, 0, max(size, 1))
        else:  # no fallocate (macOS): a sparse file, checked against the free space above
            os.ftruncate(descriptor, max(size, 1))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise FnwebError(f"The memory-map folder {folder} ran out of space reserving {size / _GB:.2f} GB "
                             f"({exc.strerror}). Free space there, name another folder, or use fewer tokens.") from exc
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate
            os.ftruncate(descriptor, max(size, 1))
            return
        raise FnwebError(f"The memory-map folder {folder} cannot hold the rows ({exc.strerror}).") from exc


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass
