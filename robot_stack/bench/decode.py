"""``robot-stack bench decode``: µs per chunk for every action decoder, vs the joint decoder in the same run.

Every decoder gets the same 8-step motion (about 8 cm of TCP travel from the Panda's home pose, 0.1 s steps)
in its own action language: ``joint_position`` (baseline: the cheapest decoder, no kinematics), ``joint_delta``,
``ee_delta_xyz`` (IK per step), ``binned`` (256 bins per dim -> ee_delta_xyz), ``latent_vq`` (the shipped
residual-VQ tokens -> embodiment decoder in ONNX Runtime -> ee_delta_xyz) and ``motion_tracks`` (when that
decoder is registered: 2-view keypoint tracks -> triangulation -> pose fit -> IK). ``latent_vq_tokens_only``
times the token -> chunk step alone (ONNX Runtime, no IK). Ratios are ``p50 / p50(joint_position)``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_stack.bench.registry import register
from robot_stack.console import report_progress
from robot_stack.decoders import get_decoder
from robot_stack.decoders.binned import BinSpec
from robot_stack.decoders.vq import DEFAULT_VQ_MANIFEST, LatentVQDecoder
from robot_stack.kinematics.ik import panda_ik
from robot_stack.metrics import time_calls
from robot_stack.robots import panda
from robot_stack.types import ActionChunk, Pose, RobotState

log = logging.getLogger("robot_stack.bench.decode")

HORIZON = 8
DT_S = 0.1


def _cases(state: RobotState, ik: Any) -> dict[str, Callable[[], object]]:
    """Decoder name -> a zero-argument call decoding one chunk of the common motion."""
    import onnxruntime as ort

    steps = np.arange(HORIZON)[:, None] / (HORIZON - 1)
    deltas = steps * np.array([0.06, -0.04, -0.03])  # metres, base frame
    joints = np.empty((HORIZON, 7))
    q = state.q
    for k, d in enumerate(deltas):
        q = ik.solve(Pose(state.ee_pose.rotation, state.ee_pose.translation + d), q)
        joints[k] = q
    t = state.t_ns
    cases: dict[str, Callable[[], object]] = {}

    def add(name: str, decoder: Any, chunk: ActionChunk) -> None:
        cases[name] = lambda: decoder.decode(chunk, state)

    add("joint_position", get_decoder("joint_position"), ActionChunk(t, DT_S, joints, "joint_position"))
    add("joint_delta", get_decoder("joint_delta"), ActionChunk(t, DT_S, joints - state.q, "joint_delta"))
    add("ee_delta_xyz", get_decoder("ee_delta_xyz", ik=ik), ActionChunk(t, DT_S, deltas, "ee_delta_xyz"))
    spec = BinSpec(np.full(3, -0.2), np.full(3, 0.2), 256, "ee_delta_xyz")
    add("binned", get_decoder("binned", spec=spec, ik=ik), ActionChunk(t, DT_S, spec.tokenize(deltas), "binned"))

    vq = LatentVQDecoder(DEFAULT_VQ_MANIFEST, ik=ik)
    encoder = ort.InferenceSession(str(vq.manifest.encoder_path), providers=["CPUExecutionProvider"])
    (tokens,) = encoder.run(["tokens"], {"chunk": deltas.astype(np.float32)})
    add("latent_vq", vq, ActionChunk(t, DT_S, tokens, "latent_vq"))
    cases["latent_vq_tokens_only"] = lambda: vq.decode_tokens(tokens)

    try:  # registered by a sibling module; measured only where it exists and its calibration files load
        importlib.import_module("robot_stack.decoders.motion_tracks")
        tracks_decoder = get_decoder("motion_tracks", ik=ik)
        poses = [Pose(state.ee_pose.rotation, state.ee_pose.translation + d) for d in deltas]
        tracks = tracks_decoder.tracks.tracks_to_actions(tracks_decoder.tracks.project_poses(poses))
        add("motion_tracks", tracks_decoder, ActionChunk(t, DT_S, tracks, "motion_tracks"))
    except Exception as exc:  # noqa: BLE001 - any failure here only hides this one row
        log.warning("motion_tracks decoder not benchmarked: %s", exc)
    return cases


@register("decode")
def run(quick: bool) -> dict[str, Any]:
    ik = panda_ik()
    q0 = panda.HOME_Q
    state = RobotState(1_000_000_000, q0, np.zeros(7), ik.fk(q0))
    cases = _cases(state, ik)
    repeats = 60 if quick else 200
    p50_us: dict[str, float] = {}
    out: dict[str, Any] = {"horizon": HORIZON, "repeats": repeats}
    for k, (name, fn) in enumerate(cases.items()):
        report_progress("bench decode", k, len(cases), "decoders", name)
        # IK decoders cost ~1000x the joint decoder: give cheap ones more samples for a stable median
        n = repeats * (10 if name.startswith("joint") else 1)
        samples = time_calls(fn, n)
        p50_us[name] = float(np.median(samples)) * 1e6
        out[f"{name}_us_p50"] = round(p50_us[name], 1)
        out[f"{name}_us_p99"] = round(float(np.percentile(samples, 99)) * 1e6, 1)
    report_progress("bench decode", len(cases), len(cases), "decoders", "done")
    base = p50_us["joint_position"]
    out["baseline"] = "joint_position"
    for name, value in p50_us.items():
        if name != "joint_position":
            out[f"{name}_ratio_vs_joint"] = round(value / base, 1)
    out["decoders"] = sorted(p50_us)
    return out
