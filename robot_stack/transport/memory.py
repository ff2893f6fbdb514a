"""Process memory: resident set size, and handing freed heap memory back to the OS.

glibc keeps freed memory in its arenas (and raises its mmap threshold after large frees, so later large buffers
come from the heap too): after a burst of large requests a server's RSS would stay at the burst's peak although
nothing holds the memory. :func:`trim_heap` calls glibc's ``malloc_trim(0)``, which returns every whole free page
of every arena; on other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

__all__ = ["rss_bytes", "trim_heap"]


@functools.cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); True if the C library offers it."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)  # type: ignore[operator]
    return True


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of process ``pid`` (default: this one), bytes, from ``/proc/<pid>/status`` (Linux).

    Raises:
        OSError: no such process, or no ``/proc`` (not Linux).
    """
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/{pid or os.getpid()}/status has no VmRSS line")
