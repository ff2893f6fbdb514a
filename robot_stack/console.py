"""What an operator sees on the terminal: quiet logs, progress with k/N and ETA, summary tables.

* :func:`setup_logging` — one stderr handler for the whole process. ``-q`` shows warnings and errors only, the default
  adds info, ``-v`` adds debug and tracebacks. Repeated records are folded **per cause** (logger, level and the
  message with its numbers masked, so ``request 17 timed out`` and ``request 18 timed out`` are one cause): at most
  one line per cause per second, the next line carrying the count (``(repeated 9 more times in the last 1.0 s)``,
  :mod:`robot_stack.logs`); counts still held back are written when logging shuts down.
* :func:`progress` — a progress bar on a terminal (rich: description, bar, ``k/N``, elapsed, ETA); elsewhere (a
  pipe, CI logs) one plain line at most every ``every_s`` seconds and one at the end, with the same ``k/N`` and ETA.
* :func:`summary_table` — a rich table rendered to text (or printed with :func:`print_table`), for the summary each
  long command prints at its end.

Library code logs through :mod:`logging` only; these helpers are for the command-line entry points (and the loops
they drive, which take a progress object as an optional argument).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from robot_stack.logs import RepeatFolder, folded_suffix

__all__ = [
    "FoldByCause",
    "OperatorHandler",
    "Progress",
    "ProgressBoard",
    "cause_of",
    "format_eta",
    "print_summary",
    "print_table",
    "progress",
    "progress_board",
    "report_progress",
    "setup_logging",
    "summary_table",
]

#: Third-party loggers that are chatty at INFO (one line each per process start) and say nothing an operator acts on.
NOISY_LOGGERS = ("OpenGL", "OpenGL.acceleratesupport", "matplotlib", "PIL", "urllib3", "websockets", "asyncio")

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def cause_of(record: logging.LogRecord) -> Hashable:
    """The cause a record is folded under: logger name, level, and its message with numbers masked (the template of
    ``log.warning("request %d timed out", 17)`` and the text of an f-string alike)."""
    text = record.msg if isinstance(record.msg, str) else str(record.msg)
    if record.args:  # a %-template: its text names the cause; the arguments are the instance
        return record.name, record.levelno, _NUMBER.sub("#", text)
    return record.name, record.levelno, _NUMBER.sub("#", record.getMessage())


class FoldByCause(logging.Filter):
    """Handler filter: records of one cause (:func:`cause_of`) pass at most once per ``interval_s``; the next one
    that passes says how many were folded. :meth:`pending` hands back the counts still held (for a last line)."""

    def __init__(
        self,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cause: Callable[[logging.LogRecord], Hashable] = cause_of,
    ) -> None:
        super().__init__()
        self.folder = RepeatFolder(interval_s, clock)
        self._cause = cause
        self._last: dict[Hashable, logging.LogRecord] = {}
        self.folded_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True  # never held back
        cause = self._cause(record)
        message = record.getMessage()
        decision = self.folder.submit(cause, message, record.levelno)
        if decision is None:
            self._last[cause] = record
            self.folded_total += 1
            return False
        self._last.pop(cause, None)
        if decision[0]:
            record.msg, record.args = message + folded_suffix(*decision), None
        return True

    def pending(self, force: bool = False) -> list[logging.LogRecord]:
        """Records standing for folded occurrences whose interval is over (all of them with ``force``), each with
        its count appended; they are counted as written."""
        out = []
        due = self.folder.due() if not force else self._all_pending()
        for cause, folded, span, _message, _level in due:
            record = self._last.pop(cause, None)
            if record is None:
                continue
            # the record shown is the last folded occurrence itself: the suffix counts the others
            record.msg, record.args = record.getMessage() + folded_suffix(folded - 1, span), None
            out.append(record)
        return out

    def _all_pending(self) -> list[tuple[Hashable, int, float, str, int]]:
        now = self.folder.clock()
        out = []
        with self.folder._lock:
            for cause, state in self.folder._causes.items():
                if state.folded:
                    out.append((cause, state.folded, now - state.last_emit_s, state.message, state.level))
                    state.last_emit_s, state.folded = now, 0
        return out


class OperatorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr handler for the command line: writes to the *current* ``sys.stderr`` (so that a live progress bar,
    which redirects it, keeps its place below the log), folds repeats per cause, and on close writes the counts
    still held back."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.fold = FoldByCause(interval_s, clock)
        self.addFilter(self.fold)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it; the current stderr is used
        pass

    def emit(self, record: logging.LogRecord) -> None:
        for due in self.fold.pending():
            super().emit(due)
        super().emit(record)

    def close(self) -> None:
        try:
            for due in self.fold.pending(force=True):
                super().emit(due)
        finally:
            super().close()


def setup_logging(verbosity: int = 0, *, interval_s: float = 1.0) -> OperatorHandler:
    """Configure the root logger for a command-line process: ``verbosity`` -1 (``-q``) warnings, 0 info, 1 (``-v``)
    debug. Replaces the handler of an earlier call (and a ``basicConfig`` stream handler). Returns the handler."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger()
    for old in list(root.handlers):
        # ours from an earlier call, and basicConfig's plain stream handler; others (a test runner's capture, a
        # file handler an embedding program set up) stay
        if isinstance(old, OperatorHandler):
            old.close()
            root.removeHandler(old)
        elif type(old) is logging.StreamHandler:
            root.removeHandler(old)
    handler = OperatorHandler(interval_s)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
    return handler


def format_eta(seconds: float | None) -> str:
    """``12 s``, ``3 min 05 s``, ``1 h 02 min``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class Progress:
    """Progress of ``total`` units of work (episodes, epochs, scenarios, repetitions).

    On a terminal it draws a rich bar (``description ━━━━━  k/N unit  elapsed  ETA``) on stderr; elsewhere it writes
    one plain line (``description: k/N unit (p %), elapsed, ETA``) at most every ``every_s`` seconds and when done.
    ``advance`` may carry a short status (``success 4/5``) shown beside the count.

    Args:
        total: units of work expected (> 0).
        description: what is being done (``record``, ``train epochs``).
        unit: the unit's name, plural (``episodes``).
        stream: where plain lines go (default: the current ``sys.stderr``).
        live: draw the rich bar (default: when ``stream`` is a terminal).
        every_s: minimum seconds between plain lines.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        total: int,
        description: str,
        unit: str = "",
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(1, int(total))
        self.description = description
        self.unit = unit
        self.done = 0
        self.status = ""
        self._stream = stream
        self._clock = clock
        self._t0 = clock()
        self._every_s = float(every_s)
        self._last_line = -float("inf")
        target = stream if stream is not None else sys.stderr
        self.live = bool(live if live is not None else getattr(target, "isatty", lambda: False)())
        self._rich: Any = None
        self._task: Any = None
        self.lines: list[str] = []  # the plain lines written (for tests and logs)

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def elapsed_s(self) -> float:
        return self._clock() - self._t0

    def eta_s(self) -> float | None:
        """Seconds left at the average pace so far; None before the first unit."""
        if self.done <= 0:
            return None
        return self.elapsed_s() / self.done * max(0, self.total - self.done)

    def text(self) -> str:
        """``description: k/N unit (p %), 12 s elapsed, ETA 30 s[, status]``."""
        pct = 100.0 * self.done / self.total
        unit = f" {self.unit}" if self.unit else ""
        status = f", {self.status}" if self.status else ""
        return (
            f"{self.description}: {self.done}/{self.total}{unit} ({pct:.0f} %), {format_eta(self.elapsed_s())} "
            f"elapsed, ETA {format_eta(self.eta_s()) if self.done < self.total else '0 s'}{status}"
        )

    def start(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                redirect_stderr=True,
                redirect_stdout=False,
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total, status="")
        return self

    def advance(self, n: int = 1, status: str | None = None) -> None:
        """``n`` more units done (``status``: a short note shown beside the count)."""
        self.set(self.done + int(n), status)

    def set(self, done: int, status: str | None = None, total: int | None = None) -> None:
        """``done`` units done of ``total`` (default: unchanged)."""
        if total is not None:
            self.total = max(1, int(total))
        self.done = max(0, min(self.total, int(done)))
        if status is not None:
            self.status = status
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, total=self.total, status=self.status)
            return
        now = self._clock()
        if self.done == 0:  # nothing to say yet (the clock runs from here)
            return
        if self.done >= self.total or now - self._last_line >= self._every_s:
            self._last_line = now
            self._write(self.text())

    def _write(self, line: str) -> None:
        self.lines.append(line)
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not stop the work
            print(line, file=self.stream, flush=True)

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.done < self.total and self.lines and self.lines[-1] != self.text():
            self._write(self.text() + " (stopped)")

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def progress(total: int, description: str, unit: str = "", **kwargs: Any) -> Iterator[Progress]:
    """``with progress(10, "record", "episodes") as bar: ... bar.advance()`` — see :class:`Progress`."""
    bar = Progress(total, description, unit, **kwargs)
    bar.start()
    try:
        yield bar
    finally:
        bar.stop()


class ProgressBoard:
    """The progress of whatever a command runs, reported from inside library loops through :func:`report_progress`
    (a no-op when no board is active, e.g. in library use and tests). One line (plain) or bar (terminal) per task
    name; a task whose count reaches its total is finished. Terminal bars share one rich display (nested tasks,
    such as the episodes of each HIL scenario, show one bar each)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        target = stream if stream is not None else sys.stderr
        self.live = bool(live if live is not None else getattr(target, "isatty", lambda: False)())
        self._every_s = every_s
        self._clock = clock
        self.tasks: dict[str, Progress] = {}
        self._last_end = clock()
        self._rich: Any = None
        self._lock = threading.Lock()

    def update(self, task: str, done: int, total: int, unit: str = "", status: str = "") -> None:
        with self._lock:
            bar = self.tasks.get(task)
            if bar is None or (bar.done >= bar.total and done < bar.done):  # new, or the same task run again
                bar = Progress(
                    total, task, unit, stream=self._stream, live=False, every_s=self._every_s, clock=self._clock
                )
                if done > 0:  # first heard of after some work: it started when the previous task ended, at the latest
                    bar._t0 = self._last_end  # noqa: SLF001
                self.tasks[task] = bar
                if self.live:
                    self._attach(bar)
            bar.set(done, status, total)
            if bar.done >= bar.total:
                self._last_end = self._clock()

    def _attach(self, bar: Progress) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self._stream if self._stream is not None else sys.stderr),
                redirect_stderr=True,
                redirect_stdout=False,
            )
            self._rich.start()
        bar._rich = self._rich  # noqa: SLF001 - the bar draws through the shared display
        bar._task = self._rich.add_task(bar.description, total=bar.total, status="", unit=bar.unit)  # noqa: SLF001

    def close(self) -> None:
        with self._lock:
            if self._rich is not None:
                self._rich.stop()
                self._rich = None
            else:
                for bar in self.tasks.values():
                    bar.stop()


_BOARD: contextvars.ContextVar[ProgressBoard | None] = contextvars.ContextVar("robot_stack_progress", default=None)


@contextmanager
def progress_board(**kwargs: Any) -> Iterator[ProgressBoard]:
    """Make a :class:`ProgressBoard` the target of :func:`report_progress` for the ``with`` block."""
    board = ProgressBoard(**kwargs)
    token = _BOARD.set(board)
    try:
        yield board
    finally:
        _BOARD.reset(token)
        board.close()


def report_progress(task: str, done: int, total: int, unit: str = "", status: str = "") -> None:
    """Library loops call this after each unit of work (``report_progress("evaluate", i + 1, n, "episodes",
    "success 4/5")``); shown when a command runs under :func:`progress_board`, ignored otherwise."""
    board = _BOARD.get()
    if board is not None:
        board.update(task, done, total, unit, status)


def _numeric(value: object) -> bool:
    try:
        float(str(value).rstrip("%").replace(",", ""))
    except ValueError:
        return False
    return True


def summary_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *, width: int | None = None
) -> str:
    """A rich table (title, header row, one row per item) rendered to plain text (no colour codes, no markup:
    ``robot-stack[gpu]`` stays as written). Columns whose every value is a number are right-aligned. ``width``:
    characters (default: the terminal's, at least 100; 120 when not a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if width is None:
        width = max(100, shutil.get_terminal_size((120, 24)).columns)
    table = Table(title=title, title_justify="left", show_lines=False)
    for i, col in enumerate(columns):
        values = [row[i] for row in rows if i < len(row) and row[i] not in (None, "")]
        numeric = bool(values) and all(_numeric(v) for v in values)
        table.add_column(str(col), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text("–" if v is None else str(v)) for v in row))
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    to_stderr: bool = False,
    width: int | None = None,
) -> str:
    """Print :func:`summary_table` on stdout (stderr when stdout carries machine-readable output); return it."""
    text = summary_table(title, columns, rows, width=width)
    print(text, file=sys.stderr if to_stderr else sys.stdout, flush=True)
    return text


def _flat_items(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.extend(_flat_items(value, f"{prefix}{key}."))
        elif isinstance(value, float):
            out.append((f"{prefix}{key}", f"{value:.4g}"))
        elif isinstance(value, (list, tuple)) and len(value) > 8:
            out.append((f"{prefix}{key}", f"[{len(value)} values]"))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def print_summary(title: str, mapping: Mapping[str, Any], *, to_stderr: bool = False) -> str:
    """A two-column summary table (``what | value``) of ``mapping``, nested maps flattened to ``a.b`` rows."""
    return print_table(title, ["", "value"], _flat_items(mapping), to_stderr=to_stderr)
