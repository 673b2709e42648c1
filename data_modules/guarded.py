"""Files written through a Python file object that keeps the first write error (a full disk,
a quota, the file-size limit) instead of handing it to the library writing (HDF5, torch).

Why: when a write fails inside HDF5 (a chunk evicted from its cache, the metadata flushed at
close), HDF5 2.x leaves the file in a state where any later call on it, its close or the
garbage collection of a dataset object, segfaults (issue 21: exit 139 on a full disk). Here
HDF5 never sees the failure: a failed write is recorded and reported as written, the file
closes normally, and the caller raises the recorded ``OSError`` (:func:`check_writes`
during the build, :meth:`GuardedFile.raise_error` after close) and deletes the file, which
is garbage from the first failed write on. ``torch.save`` turns a failed write into a
``RuntimeError`` without its errno; through a :class:`GuardedFile` it completes and the
caller raises the ``OSError`` (:func:`guarded_write`).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import h5py

__all__ = ["GuardedFile", "check_writes", "guarded_h5", "guarded_write", "release"]

_OPEN: dict[int, GuardedFile] = {}  # HDF5 file id -> its guard, while open


class GuardedFile(io.RawIOBase):
    """A read-write file for h5py's ``fileobj`` driver; see the module docstring."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = str(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self.pos = 0
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.pos = offset
        elif whence == os.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = os.fstat(self.fd).st_size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf) -> int:  # noqa: ANN001 - a writable buffer
        n = os.preadv(self.fd, [buf], self.pos)
        self.pos += n
        return n

    def write(self, data) -> int:  # noqa: ANN001 - a bytes-like object
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self.error = e
        self.pos += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                self.error = e
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            try:
                if self.error is None:
                    os.fsync(self.fd)
            except OSError as e:
                self.error = e
            finally:
                os.close(self.fd)
        super().close()

    def raise_error(self) -> None:
        """Raise the first write error, if any (an ``OSError`` with its errno)."""
        if self.error is not None:
            e = self.error
            raise OSError(e.errno, e.strerror or str(e), self.path)


def guarded_h5(path: str | os.PathLike) -> tuple[h5py.File, GuardedFile]:
    """A new HDF5 file at ``path`` for writing, and its guard. Close the file, then the
    guard, then call :meth:`GuardedFile.raise_error`."""
    raw = GuardedFile(path)
    try:
        f = h5py.File(raw, "w")
    except BaseException:
        raw.close()
        raise
    _OPEN[f.id.id] = raw
    return f, raw


def release(f: h5py.File) -> None:
    """Forget the guard of ``f`` (before it is closed)."""
    _OPEN.pop(f.id.id, None)


def check_writes(obj: h5py.File | h5py.Group | h5py.Dataset) -> None:
    """Raise the recorded write error of the guarded file holding ``obj`` (none for a file
    opened otherwise): a build stops at its next block instead of writing into the void."""
    raw = _OPEN.get(obj.file.id.id)
    if raw is not None:
        raw.raise_error()


@contextlib.contextmanager
def guarded_write(path: str | os.PathLike) -> Iterator[GuardedFile]:
    """``path`` opened for writing as a :class:`GuardedFile`; its first write error is raised
    as an ``OSError`` when the block ends."""
    raw = GuardedFile(path)
    try:
        yield raw
    finally:
        raw.close()
    raw.raise_error()
