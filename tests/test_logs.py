"""Folding repeated log lines: at most one line per cause per interval, with the count of what was held back."""

from __future__ import annotations

import logging

import pytest

from robot_stack.logs import FoldedLogger, FoldRepeats, RepeatFolder, folded_suffix


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_folder_writes_the_first_then_one_per_interval_with_the_count():
    clock = _Clock()
    folder = RepeatFolder(1.0, clock)
    assert folder.submit("a") == (0, 0.0)
    written = []
    for _ in range(20):  # a retry loop at 2 Hz for 10 s
        clock.t += 0.5
        decision = folder.submit("a")
        if decision is not None:
            written.append(decision)
    assert len(written) == 10  # one per second, not 20
    assert all(folded == 1 for folded, _ in written)
    assert all(span == pytest.approx(1.0) for _, span in written)
    assert folder.submit("b") == (0, 0.0)  # another cause is written at once
    clock.t += 0.2
    assert folder.submit("b") is None
    assert folder.submit("b") is None
    assert folder.due() == []  # its interval has not passed yet
    clock.t += 0.9
    assert folder.due() == [("b", 2, pytest.approx(1.1), "", logging.INFO)]  # the quiet cause's count is not lost
    assert folder.due() == []
    folder.forget("b")
    assert folder.submit("b") == (0, 0.0)
    with pytest.raises(ValueError, match="positive"):
        RepeatFolder(0)


def test_folded_logger_one_line_per_cause_per_second_and_flush(caplog):
    clock = _Clock()
    log = FoldedLogger(logging.getLogger("test.folded"), 1.0, clock)
    caplog.set_level(logging.INFO, "test.folded")
    for i in range(12):  # 6 s of "configure failed" twice a second
        log.error("camera configure failed: %s", "no device")
        if i == 5:
            log.warning("calibration missing", cause="calibration")
        clock.t += 0.5
    lines = [r.getMessage() for r in caplog.records]
    failed = [m for m in lines if m.startswith("camera configure failed")]
    assert len(failed) == 6
    assert failed[0] == "camera configure failed: no device"
    assert failed[1] == "camera configure failed: no device (repeated 1 more time in the last 1.0 s)"
    assert "calibration missing" in lines
    assert [r.levelno for r in caplog.records if r.getMessage() in failed] == [logging.ERROR] * 6
    caplog.clear()
    assert log.flush() == 1  # the last attempt (t = 5.5 s) was folded: its count comes out once its second is over
    assert caplog.records[0].getMessage() == failed[1]
    caplog.clear()
    assert not log.error("camera configure failed: %s", "no device")  # less than 1 s after the last line: folded
    assert caplog.records == []
    clock.t += 0.4
    assert log.flush() == 0  # not yet
    clock.t += 0.6
    assert log.flush() == 1
    assert log.flush() == 0


def test_fold_repeats_filter_on_a_handler():
    clock = _Clock()
    logger = logging.getLogger("test.fold_filter")
    logger.propagate = False
    seen: list[str] = []

    class _Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = _Sink()
    handler.addFilter(FoldRepeats(1.0, clock))
    logger.addHandler(handler)
    try:
        for _ in range(5):
            logger.warning("server %s unreachable", "gpu-box")
            logger.warning("other")
            clock.t += 0.3
        clock.t += 1.0
        logger.warning("server %s unreachable", "gpu-box")
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "server gpu-box unreachable",
        "other",
        "server gpu-box unreachable (repeated 3 more times in the last 1.2 s)",
        "other (repeated 3 more times in the last 1.2 s)",
        "server gpu-box unreachable",  # nothing folded since the last line
    ]
    assert folded_suffix(0, 1.0) == ""
