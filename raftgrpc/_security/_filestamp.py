"""One definition of "this file changed", for everything that follows a file on disk.

The TLS certificate reloader, the JWKS key set and the token file source all re-read a file
only when its stamp differs from the stamp of the version they hold. The stamp is
``(st_mtime_ns, st_size, st_ino, st_dev)``, because each field catches a replacement the
others can miss:

* ``st_mtime_ns``: a rewrite in place (nanoseconds, not the float ``st_mtime``, which rounds).
* ``st_size``: a rewrite within the file system's timestamp granularity (coarse clocks, or
  two writes within one tick), when the length differs.
* ``st_ino``: an atomic replacement (write a new file, then rename it over the old one), the
  way certificates and keys should be rotated, even when the new file kept the old mtime
  (``cp -p``, ``tar``, ``rsync -t``) and has the same size.
* ``st_dev``: an inode number is unique within one file system only; a path switched to a
  file on another file system (a symlink swap, as Kubernetes does for mounted secrets) may
  meet the same inode number there.

``st_ctime_ns`` is left out on purpose: a metadata-only change (``chmod``, ``chown``, a new
hard link) would then count as a new version and make the followers re-read, and log, a file
whose content did not change.
"""

from __future__ import annotations

import os
from typing import IO, Any, NamedTuple

__all__ = ["FileStamp", "stamp", "stamp_open"]


class FileStamp(NamedTuple):
    """What identifies one version of a file (see the module docstring)."""

    mtime_ns: int
    size: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        """The stamp of a ``stat`` result."""
        return cls(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def stamp(path: str | os.PathLike[str]) -> FileStamp:
    """The stamp of the file at ``path`` now (follows symlinks); raises ``OSError``."""
    return FileStamp.of(os.stat(path))


def stamp_open(stream: IO[Any]) -> FileStamp:
    """The stamp of an open file: that of the version being read, even if the path is
    replaced meanwhile (take it before reading, so a change during the read is seen next
    time)."""
    return FileStamp.of(os.fstat(stream.fileno()))
