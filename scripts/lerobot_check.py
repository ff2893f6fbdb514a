"""Runs inside the LeRobot environment of scripts/lerobot_recipe.sh: LeRobot's own classes and tools on a robot-stack
dataset, checked against robot-stack's own reading of the same episode (an .npz written by robot-stack's loader).

    python scripts/lerobot_check.py DATASET ROBOT_STACK_FRAMES.npz [--out DIR] [--video-backend torchcodec|pyav]

Checks (each failure exits 1 with the reason; the last line is a JSON summary):

* ``LeRobotDataset`` opens the dataset (metadata, tasks, parquet data, the MP4s);
* frames decode with the chosen backend (torchcodec when its FFmpeg libraries load, else PyAV) and match
  robot-stack's decoded frames (mean absolute difference < 3 grey levels: the same H.264 stream);
* ``delta_timestamps``: ``observation.state`` at -1 and 0 frames and an 8-step ``action`` chunk equal the recorded
  rows, with ``action_is_pad`` set past the episode's end;
* ``lerobot-dataset-viz`` writes a rerun ``.rrd`` of an episode.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ID = "local/robot_stack"


def video_backend(wanted: str | None) -> tuple[str, str]:
    """(backend, why): torchcodec if its FFmpeg shared libraries load, else pyav."""
    if wanted:
        return wanted, "asked for"
    try:
        import torchcodec.decoders  # noqa: F401  (loads libtorchcodec_core + FFmpeg's shared libraries)
    except Exception as exc:  # RuntimeError: Could not load libtorchcodec ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return "pyav", f"torchcodec cannot load FFmpeg ({first[:160]}); apt install ffmpeg to use it"
    return "torchcodec", "FFmpeg shared libraries found"


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", file=sys.stderr)
    raise SystemExit(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("reference")
    ap.add_argument("--out", default=".")
    ap.add_argument("--video-backend", choices=["torchcodec", "pyav"])
    ap.add_argument("--chunk", type=int, default=8)
    args = ap.parse_args()
    import lerobot
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    root, out = Path(args.dataset), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = np.load(args.reference)
    backend, why = video_backend(args.video_backend)
    print(f"lerobot {lerobot.__version__}, torch {torch.__version__}; video backend {backend}: {why}")

    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    fps = meta.fps
    delta = {"observation.state": [-1 / fps, 0.0], "action": [k / fps for k in range(args.chunk)]}
    t0 = time.monotonic()
    ds = LeRobotDataset(REPO_ID, root=root, video_backend=backend, delta_timestamps=delta)
    print(
        f"LeRobotDataset: {ds.num_episodes} episodes, {ds.num_frames} frames, {fps} fps, video keys "
        f"{ds.meta.video_keys} ({time.monotonic() - t0:.1f} s)"
    )
    ep = int(ref["episode"])
    start = int(ds.meta.episodes[ep]["dataset_from_index"])
    length = int(ds.meta.episodes[ep]["length"])
    if length != len(ref["state"]):
        fail(f"episode {ep}: LeRobot says {length} frames, robot-stack {len(ref['state'])}")

    k = 2
    item = ds[start + k]
    errs = {}
    for key in ds.meta.video_keys:
        cam = key.rsplit(".", 1)[-1]
        img = item[key]  # with delta_timestamps only on state/action: (3, H, W) float in [0, 1]
        got = (img.permute(1, 2, 0).numpy() * 255.0).round()
        want = ref[f"rgb/{cam}"][k].astype(np.float64)
        if got.shape != want.shape:
            fail(f"{key}: frame shape {got.shape}, robot-stack {want.shape}")
        errs[cam] = float(np.abs(got - want).mean())
        if errs[cam] >= 3.0:
            fail(f"{key}: frame {k} differs from robot-stack's decode by {errs[cam]:.2f} grey levels (>= 3)")
    print(f"decoded frame {k} of episode {ep} with {backend}: mean |LeRobot - robot-stack| {errs} grey levels")

    state = item["observation.state"].numpy()
    if (
        state.shape[0] != 2
        or not np.allclose(state[1], ref["state"][k])
        or not np.allclose(state[0], ref["state"][k - 1])
    ):
        fail(f"delta_timestamps observation.state at -1/fps, 0 != recorded rows {k - 1}, {k}")
    chunk = item["action"].numpy()
    n = min(args.chunk, length - k)
    if chunk.shape[0] != args.chunk or not np.allclose(chunk[:n], ref["action"][k : k + n]):
        fail(f"delta_timestamps action chunk != recorded actions {k}..{k + n - 1}")
    tail = ds[start + length - 3]
    pad = tail["action_is_pad"].numpy()
    if not (pad[:3].tolist() == [False] * 3 and pad[3:].all()):
        fail(f"action_is_pad near the episode's end: {pad.tolist()} (expected 3 real steps, then padding)")
    print(
        f"delta_timestamps: state (2, {state.shape[1]}), action chunk {tuple(chunk.shape)} equal the recorded rows; "
        f"padding past the end flagged"
    )

    viz = shutil.which("lerobot-dataset-viz", path=str(Path(sys.executable).parent))
    if viz is None:
        fail("lerobot-dataset-viz is not installed in this environment")
    cmd = [
        viz,
        "--repo-id",
        REPO_ID,
        "--root",
        str(root),
        "--episode-index",
        str(ep),
        "--mode",
        "local",
        "--save",
        "1",
        "--output-dir",
        str(out / "viz"),
        "--num-workers",
        "0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    rrds = sorted((out / "viz").glob("*.rrd"))
    if proc.returncode != 0 or not rrds:
        fail(f"lerobot-dataset-viz exit {proc.returncode}, files {rrds}: {proc.stderr[-1500:]}")
    print(f"lerobot-dataset-viz wrote {rrds[0]} ({rrds[0].stat().st_size / 1e6:.1f} MB)")
    print(json.dumps({"ok": True, "lerobot": lerobot.__version__, "torch": torch.__version__,
                      "video_backend": backend, "episodes": ds.num_episodes, "frames": ds.num_frames,
                      "frame_error_grey_levels": errs, "viz_rrd": str(rrds[0])}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
