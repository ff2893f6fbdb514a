"""``robot-stack bench ik``: streaming IK cost per step and warm-started solve cost, vs a naive baseline.

Baselines (same run, same target):

* the textbook step many first implementations use — a numerical Jacobian from 7 extra forward-kinematics calls and
  ``np.linalg.pinv`` (SVD), no damping, no limits;
* one step of **placo** (``KinematicsSolver.solve`` + ``update_kinematics``, a QP-based whole-body IK on the same
  URDF and TCP frame), when placo is installed (``ratio_vs_placo`` = our p50 / placo's p50).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pinocchio as pin

from robot_stack.bench.registry import register
from robot_stack.kinematics.ik import panda_ik
from robot_stack.metrics import latency_stats, time_calls
from robot_stack.robots import panda
from robot_stack.types import Pose


@register("ik")
def run(quick: bool) -> dict[str, Any]:
    ik = panda_ik()
    rng = np.random.default_rng(0)
    n = 300 if quick else 3000
    q = panda.HOME_Q.copy()
    home = ik.fk(q)
    target = Pose(home.rotation, home.translation + np.array([0.03, -0.02, 0.02]))

    state = {"q": q.copy()}

    def one_step() -> None:
        state["q"] = ik.step(target, state["q"])

    step = time_calls(one_step, n)

    model, fid = ik.model, ik.tcp_frame_id  # the same reduced model for the baseline
    data = model.createData()

    def naive_step() -> None:
        qq = state["q"]
        pin.framesForwardKinematics(model, data, qq)
        m = data.oMf[fid]
        p0, r0 = m.translation.copy(), m.rotation.copy()
        jac = np.empty((6, 7))
        for j in range(7):
            dq = np.zeros(7)
            dq[j] = 1e-6
            pin.framesForwardKinematics(model, data, qq + dq)
            mj = data.oMf[fid]
            jac[:3, j] = (mj.translation - p0) / 1e-6
            jac[3:, j] = pin.log3(mj.rotation @ r0.T) / 1e-6
        err = np.concatenate([target.translation - p0, pin.log3(target.rotation @ r0.T)])
        state["q"] = qq + np.linalg.pinv(jac) @ err

    state["q"] = q.copy()
    naive = time_calls(naive_step, n)

    # warm-started solves like the ee_delta decoder does: 1-3 cm moves from the previous solution
    m_solve = 50 if quick else 300
    starts = [panda.HOME_Q + rng.normal(0, 0.2, 7) for _ in range(m_solve)]
    targets = [ik.fk(s) for s in starts]
    moved = [Pose(t.rotation, t.translation + rng.uniform(-0.03, 0.03, 3)) for t in targets]
    solve_s = np.empty(m_solve)
    iters = np.empty(m_solve)
    for i in range(m_solve):
        t = time.perf_counter_ns()
        res = ik.solve_with_info(moved[i], starts[i])
        solve_s[i] = (time.perf_counter_ns() - t) / 1e9
        iters[i] = res.iterations
    out: dict[str, Any] = {}
    out.update(latency_stats(step, prefix="step_"))
    out.update(latency_stats(naive, prefix="naive_step_"))
    out["step_us_p50"] = round(float(np.median(step)) * 1e6, 1)
    out["naive_step_us_p50"] = round(float(np.median(naive)) * 1e6, 1)
    out["speedup_vs_naive"] = round(float(np.median(naive) / np.median(step)), 2)
    out.update(latency_stats(solve_s, prefix="solve_"))
    out["solve_iterations_mean"] = round(float(iters.mean()), 1)
    out.update(_placo_baseline(target, n, float(np.median(step))))
    out["target_step_us"] = 200.0
    return out


def _placo_baseline(target: Pose, n: int, our_step_s: float) -> dict[str, Any]:
    """p50 of one placo IK step toward ``target`` from HOME_Q; ``{"placo": "not installed"}`` without placo."""
    try:
        import placo
    except ImportError:
        return {"placo": "not installed (pip install placo)"}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        urdf = Path(tmp) / "panda.urdf"
        urdf.write_text(panda.urdf_text_with_absolute_paths())
        robot = placo.RobotWrapper(str(urdf), placo.Flags.ignore_collisions)
    for name, value in zip(panda.ARM_JOINTS, panda.HOME_Q, strict=True):
        robot.set_joint(name, float(value))
    robot.update_kinematics()
    solver = placo.KinematicsSolver(robot)
    solver.mask_fbase(True)
    for finger in panda.FINGER_JOINTS:  # the arm only, like our reduced model
        solver.mask_dof(finger)
    task = solver.add_frame_task(panda.TCP_FRAME, target.matrix)
    task.configure("tcp", "soft", 1.0, 0.5)

    def placo_step() -> None:
        solver.solve(True)
        robot.update_kinematics()

    samples = time_calls(placo_step, n)
    reached = float(np.linalg.norm(robot.get_T_world_frame(panda.TCP_FRAME)[:3, 3] - target.translation))
    return {
        **latency_stats(samples, prefix="placo_step_"),
        "placo_step_us_p50": round(float(np.median(samples)) * 1e6, 1),
        "ratio_vs_placo": round(our_step_s / float(np.median(samples)), 2),
        "placo_final_error_mm": round(reached * 1e3, 3),
    }
