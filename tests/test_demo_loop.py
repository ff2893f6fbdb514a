"""The whole loop: shipped policy competence (lockstep), the live demo's plumbing, and the training pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_stack.demo.loop import DEFAULT_MANIFEST, demo_config, format_report, run_demo
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.runtime import OnnxPolicy
from robot_stack.training.train_demo import evaluate, train_demo


def test_shipped_policy_touches_the_cube_in_simulated_time() -> None:
    results = evaluate(DEFAULT_MANIFEST, episodes=3, seed=500)
    assert sum(r.success for r in results) >= 2, results
    for r in results:
        assert r.steps > 3  # the policy, not a lucky reset, moved the arm


@pytest.mark.realtime
def test_live_demo_runs_every_stage_and_moves_the_arm_toward_the_cube() -> None:
    report = run_demo(demo_config(max_duration_s=6.0), episodes=1, seed=7)
    (episode,) = report.episodes
    outcomes = episode["outcomes"]
    assert outcomes.get("ok", 0) > 3, outcomes
    # a frame delayed by machine load is refused, not used; a policy pushing into a limit is taken back home
    assert set(outcomes) <= {"ok", "stale:late", "recovering"}, outcomes
    assert episode["final_distance_m"] < 0.08  # started > 0.2 m away: the served policy moved the arm
    # every cycle that asked the policy captured (a prefetched capture that aged too much is captured again)
    assert report.stages["capture"]["n"] >= episode["policy_steps"] - outcomes.get("recovering", 0)
    assert report.stages["xyz"]["n"] == report.stages["capture"]["n"]
    for stage in ("serialize", "network", "inference", "decode", "overhead_beyond_inference"):
        assert report.stages[stage]["n"] == outcomes["ok"], stage
        assert report.stages[stage]["p50_ms"] >= 0.0
    assert report.executor["ticks"] > 300  # ≥ 0.6 s of 500 Hz control
    assert report.executor["command_errors"] == 0
    assert report.server["status"] == "ok"  # the server was still healthy after the episode
    text = format_report(report)
    assert "executor tick lateness" in text and "success rate" in text


def test_train_demo_pipeline_exports_a_servable_model(tmp_path: Path) -> None:
    report = train_demo(out_dir=tmp_path, episodes=1, epochs=2, eval_episodes=0, model_id="tiny")
    assert report["samples"] > 5 and report["expert_success_rate"] == 1.0
    assert report["numpy_consistency_max_abs"] < 1e-3  # ONNX graph == trained numpy model on real observations
    manifest = PolicyManifest.load(tmp_path / "tiny.yaml")
    assert manifest.action_space == "ee_delta_xyz" and manifest.horizon == 8
    policy = OnnxPolicy(manifest, provider="cpu")
    out = policy.run(
        {
            "front/rgb": np.zeros((480, 640, 3), np.uint8),
            "front/xyz": np.full((480, 640, 3), np.nan, np.float32),
            "state": np.zeros(11, np.float32),
        }
    )
    assert out["actions"].shape == (8, 3) and np.all(np.isfinite(out["actions"]))
    assert out["features"][9] == 0.0  # nothing red in a black image: object not visible


def test_bench_cli_prints_one_json_object() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "bench", "xyz", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "xyz" and figures["p50_ms"] > 0
