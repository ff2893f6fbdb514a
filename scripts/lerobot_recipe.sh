#!/usr/bin/env bash
# The LeRobot recipe, tested: a separate LeRobot environment that reads a robot-stack dataset with LeRobot's own
# classes and tools. robot-stack's own environment (.venv, torch 2.13 for `robot-stack train`) cannot hold LeRobot
# 0.4.4: lerobot 0.4.4 requires torch < 2.11, torchvision < 0.26, torchcodec < 0.11 and rerun-sdk < 0.27, so it
# gets its own venv (about 8 GB: the PyPI torch wheels are CUDA builds, they run on the CPU too).
#
#   bash scripts/lerobot_recipe.sh [DATASET]        # DATASET: a `robot-stack record` folder (default: record 2 sim
#                                                   # episodes into a temporary folder first)
#
# Environment: LEROBOT_VENV (default .venv-lerobot), PYTHON (default python3.11 / python3), ROBOT_STACK_PYTHON
# (robot-stack's interpreter, default .venv/bin/python), LEROBOT_OUT (where the check writes its outputs),
# LEROBOT_APT=0 (do not apt-install FFmpeg), LEROBOT_VIDEO_BACKEND (torchcodec | pyav; default: torchcodec when
# its FFmpeg libraries load).
# Steps: free-disk check; venv with torch 2.10.0 + torchvision 0.25.0 + torchcodec 0.10.0 + lerobot 0.4.4 (pip, ~3
# min the first time; a stamp skips it afterwards); then scripts/lerobot_check.py inside it: LeRobotDataset loads
# the dataset, decodes video frames (torchcodec when the FFmpeg shared libraries are there, else
# video_backend="pyav"; `apt install ffmpeg` brings them), compares them with robot-stack's own loader, reads
# action chunks through delta_timestamps, and runs lerobot-dataset-viz (a .rrd of episode 0).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LEROBOT_VENV:-.venv-lerobot}
RS_PY=${ROBOT_STACK_PYTHON:-.venv/bin/python}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
OUT=${LEROBOT_OUT:-$(mktemp -d -t lerobot-recipe-XXXXXX)}
mkdir -p "$OUT"
PINS=(torch==2.10.0 torchvision==0.25.0 torchcodec==0.10.0 lerobot==0.4.4)

mkdir -p "$(dirname "$VENV")"
need_gb=10
if [ ! -f "$VENV/.lerobot-recipe" ]; then
    free_gb=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print int($4 / 1024 / 1024)}')
    echo "[lerobot] free disk at $(dirname "$VENV"): ${free_gb} GB (the environment needs about 8 GB)"
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "[lerobot] not enough free disk: ${free_gb} GB < ${need_gb} GB; free some or set LEROBOT_VENV" >&2
        exit 1
    fi
    echo "[lerobot] building $VENV: ${PINS[*]} (a few minutes)"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "${PINS[@]}"
    echo "${PINS[*]}" > "$VENV/.lerobot-recipe"
fi

# torchcodec (LeRobot's default video decoder, and the only one lerobot-dataset-viz uses) loads the system's FFmpeg
# shared libraries (4 to 7); Debian 12 has 5.1 in the `ffmpeg` package. Without them LeRobotDataset still decodes
# with video_backend="pyav" (the check falls back to it), but lerobot-dataset-viz cannot run.
if ! ldconfig -p 2>/dev/null | grep -q 'libavutil\.so\.5[6-9]'; then
    if [ "${LEROBOT_APT:-1}" = "1" ] && command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "[lerobot] installing the FFmpeg shared libraries for torchcodec (apt: ffmpeg)"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "[lerobot] no FFmpeg shared libraries: frames decode with PyAV; lerobot-dataset-viz needs them" >&2
    fi
fi

DATASET=${1:-}
if [ -z "$DATASET" ]; then
    DATASET="$OUT/dataset"
    echo "[lerobot] recording 2 simulated episodes into $DATASET"
    "$RS_PY" -m robot_stack.cli -q record --teleop expert --episodes 2 --cameras front,side --width 320 \
        --height 240 --max-duration 4 --out "$DATASET" > "$OUT/record.jsonl"
fi
# robot-stack's own reading of the same frames, for the comparison (its venv, its loader)
"$RS_PY" - "$DATASET" "$OUT/robot_stack_frames.npz" <<'PY'
import sys

import numpy as np

from robot_stack.dataset.loader import load_dataset

ds = load_dataset(sys.argv[1])
ep = ds.load_episode(ds.num_episodes - 1)
arrays = {"episode": np.array(ep.index), "state": ep.state, "action": ep.action, "timestamp": ep.timestamp}
for cam, data in ep.cameras.items():
    arrays[f"rgb/{cam}"] = data.rgb
np.savez(sys.argv[2], **arrays)
PY
"$VENV/bin/python" scripts/lerobot_check.py "$DATASET" "$OUT/robot_stack_frames.npz" --out "$OUT" \
    ${LEROBOT_VIDEO_BACKEND:+--video-backend "$LEROBOT_VIDEO_BACKEND"}
