"""CPU load beside a measurement: hog processes for benchmarks and stress tests (``bench executor``, the HIL
stress test).

:func:`cpu_hogs` starts ``n`` CPU-bound Python processes at normal priority (one per core of the 2-core
development machine) and ends them on every exit path of the block; each hog also ends by itself once its parent
is gone (it checks its parent pid every few ms), so a killed benchmark or test never leaves one running.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["cpu_hogs"]

#: A hog: pure-Python busy work that ends when its parent process is gone.
_HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(100_000):\n        pass\n"


@contextlib.contextmanager
def cpu_hogs(n: int = 2) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` CPU-hog processes running for the duration of the block (killed and reaped when it ends)."""
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            hogs.append(subprocess.Popen([sys.executable, "-c", _HOG], stdout=subprocess.DEVNULL))
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
