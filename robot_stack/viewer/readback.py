"""Read a saved ``.rrd`` back: which entities it holds, on which timelines, with which components."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EntityInfo", "recording_contents"]


@dataclass
class EntityInfo:
    """One entity of a recording: its timelines, component columns, and rows (log calls)."""

    timelines: set[str] = field(default_factory=set)
    components: set[str] = field(default_factory=set)
    rows: int = 0
    static: bool = False


def recording_contents(path: str | os.PathLike[str]) -> dict[str, EntityInfo]:
    """Entity path (``/world/cameras/front/rgb``) -> what was logged there, from the file's chunks."""
    from rerun.chunk import RrdReader

    out: dict[str, EntityInfo] = {}
    for chunk in RrdReader(Path(path)).store().stream():
        info = out.setdefault(str(chunk.entity_path), EntityInfo())
        info.timelines.update(t for t in chunk.timeline_names if t != "log_time")
        batch = chunk.to_record_batch()
        info.components.update(
            name for name in batch.schema.names if ":" in name and not name.startswith(("log_time", "time", "step"))
        )
        info.rows += chunk.num_rows
        info.static = info.static or chunk.is_static
    return out
