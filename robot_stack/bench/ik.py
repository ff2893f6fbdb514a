"""``robot-stack bench ik``: streaming IK cost per step and warm-started solve cost, vs a naive baseline.

Baseline (same run, same targets): the textbook step many first implementations use — a numerical Jacobian from
7 extra forward-kinematics calls and ``np.linalg.pinv`` (SVD), no damping, no limits.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pinocchio as pin

from robot_stack.bench.common import latency_stats, register, time_calls
from robot_stack.control.ik import panda_ik
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
    out["target_step_us"] = 200.0
    return out
