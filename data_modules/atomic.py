"""Atomic file and directory writes: a reader never sees a half-written result.

Every cache, checkpoint, table and config goes through here: write to a temporary name in
the destination's folder (unique per process, so two writers never share it), flush and
fsync, then ``os.replace``. A failure (full disk, crash, kill) leaves the old file or no
file, never a truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_text", "tmp_name"]


def tmp_name(final: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A fresh temporary path beside ``final`` (same filesystem, so the rename is atomic)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=suffix,
                               dir=final.parent)
    os.close(fd)
    # mkstemp makes the file owner-only (0600); results are shared files: the mode a plain
    # open() would give (0666 minus the umask)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final``, on error it goes."""
    final = Path(final)
    try:
        tmp = tmp_name(final, suffix)
    except OSError as e:
        raise _named(final, e) from None
    try:
        yield tmp
        with contextlib.suppress(OSError), open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise _named(final, e) from None
        raise


# a write that failed for want of room or permission (not e.g. a source file not found)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _named(final: Path, e: OSError) -> OSError:
    """A failed write as one line naming the output, not its temporary file (the CLI
    prints it and exits 2); other errors, and one that names the output already, as they
    are."""
    if e.errno not in _WRITE_ERRNOS or str(final) in str(e):
        return e
    why = " ".join((e.strerror or str(e)).split())
    hint = " (disk full?)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return OSError(e.errno, f"{final}: writing failed: {why}{hint}; it was left as it was "
                   "(the temporary file was removed)")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_dir(final: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a directory under a temporary name and rename it when complete.

    An existing ``final`` is kept as it is (builds are deterministic in their inputs)."""
    final = Path(final)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700, as for files above
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():  # not a lost race with another builder
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise _named(final, e) from None
        raise
    return final
