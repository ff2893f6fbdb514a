"""``robot-stack record`` and ``robot-stack replay``.

robot-stack record --teleop expert --episodes 20 --out data/reach          # lockstep sim, deterministic
robot-stack record --teleop expert --episodes 20 --out data/ur5 --robot ur5   # the UR5 in its own cell
robot-stack record --teleop expert --episodes 5 --out data/reach --resume  # repair the index, append
robot-stack record --task "touch the blue cylinder" --episodes 5 --out data/blue   # tabletop suite
robot-stack record --teleop keyboard --live --out data/jog                 # real time, keys on stdin
robot-stack replay data/reach --episode 0 --plot out/ep0.png --video out/ep0.mp4
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from robot_stack.console import print_summary, print_table, report_progress
from robot_stack.stack.cli import add_robot_argument
from robot_stack.viewer.cli import add_view_arguments, open_view

log = logging.getLogger("robot_stack.dataset.cli")

__all__ = ["add_dataset_parser"]


def _open_writer(args: argparse.Namespace, spec: Any, calibrations: Any) -> Any:
    from robot_stack.dataset.format import INFO_PATH
    from robot_stack.dataset.writer import DatasetWriter
    from robot_stack.errors import DatasetError

    out = Path(args.out)
    exists = (out / INFO_PATH).is_file()
    if exists and not args.resume:
        raise DatasetError(f"{out} already holds a dataset; pass --resume to repair its index and append to it")
    if args.resume and not exists:
        log.info("--resume: %s holds no dataset yet; creating it", out)
    writer = DatasetWriter(out, spec, calibrations)
    rep = writer.last_repair
    print(
        json.dumps(
            {
                "dataset": str(out),
                "committed_episodes": rep.episodes,
                "frames": rep.frames,
                "removed_half_written": list(rep.removed_tmp),
                "removed_orphans": list(rep.removed_orphans),
                "index_rewritten": rep.index_rewritten,
            }
        ),
        flush=True,
    )
    return writer


def _cmd_record(args: argparse.Namespace) -> int:
    from robot_stack.dataset.recorder import Recorder
    from robot_stack.errors import ConfigError

    cameras = tuple(c for c in args.cameras.split(",") if c)
    if args.live or args.teleop != "expert":
        if args.task:
            raise ConfigError("--task: live recording runs the reach cell; record tabletop instructions in lockstep")
        return _record_live(args, cameras)
    from robot_stack.collection.session import SimRecordingRig
    from robot_stack.sim.expert import ExpertConfig
    from robot_stack.teleop.expert import ExpertTeleop

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    instruction = ""
    if args.task:
        from robot_stack.sim.tabletop import instruction_for

        instruction = instruction_for(args.task).text  # ConfigError listing the suite's instructions
    robot = args.robot or "panda"
    rig = SimRecordingRig(
        cameras, args.fps, args.width, args.height, args.max_duration, robot=robot, instruction=instruction
    )
    view = open_view(args, "robot-stack-record")
    try:
        if view is not None:
            from robot_stack.viewer.stack_view import CellView

            rig.view = CellView(
                view,
                rig.config.robot.model,
                rig.robot.joint_names,
                [(c.camera_id, p.camera, p.T_base_cam) for c, p in rig.cell.cameras],
            )
        writer = _open_writer(args, rig.spec, rig.calibrations)
        recorder = Recorder(writer, queue_frames=args.queue)
        # the expert keeps to the arm's TCP speed limit (the SO-101's 0.10 m/s is below the default 0.15 m/s)
        speed = min(ExpertConfig.max_speed_mps, rig.config.embodiment.max_tcp_speed_mps)
        device: Any
        if instruction:
            from robot_stack.teleop.expert import TabletopExpertTeleop

            device = TabletopExpertTeleop(rig.task.expert_goal)
        else:
            device = ExpertTeleop(rig.task.cube_top_center, ExpertConfig(max_speed_mps=speed))
        start = writer.num_episodes
        rows = []
        for i in range(args.episodes):
            seed = args.seed + start + i
            result, committed = rig.record_episode(recorder, device, seed)
            row = {
                "episode": committed.episode_index,
                "seed": seed,
                "frames": committed.length,
                "success": result.success,
                "duration_s": round(result.duration_s, 3),
                "dropped_frames": committed.dropped_frames,
                "dropped_joint_samples": committed.dropped_joint_samples,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            ok = sum(r["success"] for r in rows)
            report_progress("record", i + 1, args.episodes, "episodes", f"success {ok}/{i + 1}")
    finally:
        rig.close()
        if view is not None:
            view.close()
    _record_table(args.out, rows)
    return 0


def _record_table(out: str, rows: list[dict[str, Any]]) -> None:
    """The summary of a recording run, on stderr (stdout carries one JSON line per episode)."""
    columns = ["episode", "seed", "frames", "success", "duration_s", "dropped_frames", "dropped_joint_samples"]
    table_rows = [[r.get(c) for c in columns] for r in rows]
    total = ["all", "", sum(r["frames"] for r in rows), f"{sum(r['success'] for r in rows)}/{len(rows)}"]
    total += [round(sum(r["duration_s"] for r in rows), 1), sum(r["dropped_frames"] for r in rows)]
    total += [sum(r["dropped_joint_samples"] for r in rows)]
    print_table(f"robot-stack record -> {out}", columns, [*table_rows, total], to_stderr=True)


def _record_live(args: argparse.Namespace, cameras: tuple[str, ...]) -> int:
    from robot_stack.calibration.store import load_calibration
    from robot_stack.collection.session import run_live_session, sim_dataset_spec
    from robot_stack.dataset.recorder import Recorder
    from robot_stack.sim.robot_cells import default_scene
    from robot_stack.teleop.keys import StdinKeySource
    from robot_stack.teleop.terminal import TerminalKeys

    robot = args.robot or "panda"
    spec = sim_dataset_spec(cameras, args.fps, args.width, args.height, robot)
    calibrations = {c: load_calibration(default_scene(robot), c) for c in cameras}
    writer = _open_writer(args, spec, calibrations)
    recorder = Recorder(writer, queue_frames=args.queue)
    raw = sys.stdin is not None and sys.stdin.isatty()
    keys = TerminalKeys() if raw else StdinKeySource()  # piped input (scripts, tests): one line at a time
    device = _make_device(args, keys)
    print(
        ("keys (no Enter needed): " if raw else "keys (then Enter): ")
        + "s start, e stop+success, f stop+failure, x discard, r redo, q quit; keyboard jog "
        + ("while held" if raw else "per press")
        + ": i/k x, j/l y, u/o z, g gripper",
        file=sys.stderr,
        flush=True,
    )
    view = open_view(args, "robot-stack-record-live")
    try:
        report = run_live_session(
            cameras,
            recorder,
            device,
            keys,
            args.fps,
            args.width,
            args.height,
            args.episodes or None,
            seed=args.seed,
            view=view,
            robot=robot,
        )
    finally:
        if view is not None:
            view.close()
    summary = {
        "committed": [c.episode_index for c in report.committed],
        "discarded": report.discarded,
        "dropped_frames": sum(c.dropped_frames for c in report.committed),
    }
    print(json.dumps(summary))
    print_summary(f"robot-stack record --live -> {args.out}", summary, to_stderr=True)
    return 0


def _make_device(args: argparse.Namespace, keys: Any) -> Any:
    from robot_stack.errors import ConfigError

    if args.teleop == "keyboard":
        from robot_stack.teleop.keyboard import KeyboardJog

        # the session reads the terminal and hands key presses over; held keys jog while down (raw terminal)
        return KeyboardJog(None, held=getattr(keys, "held", None))
    if args.teleop == "spacemouse":
        from robot_stack.teleop.spacemouse import SpaceMouse

        return SpaceMouse()
    if args.teleop == "expert":
        raise ConfigError("--live --teleop expert: the expert records in lockstep; drop --live")
    raise ConfigError(
        f"--teleop {args.teleop}: a leader arm needs its driver (robot_stack.teleop.LeaderArm(robot)); wire it in "
        "Python (see robot_stack.collection.session.run_live_session)"
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from robot_stack.collection.replay import replay_in_sim
    from robot_stack.dataset.loader import load_dataset
    from robot_stack.dataset.viewer import episode_figure, episode_video

    ds = load_dataset(args.dataset)
    episode = ds.load_episode(args.episode)
    result = replay_in_sim(episode, source=args.source)
    out: dict[str, Any] = result.summary()
    if args.plot:
        out["plot"] = str(episode_figure(episode, args.plot, args.frame, replay_tcp=result.tcp_replayed))
    if args.video:
        out["video"] = str(episode_video(episode, args.video))
    if args.rerun and not args.save:
        args.save = args.rerun  # the old flag
    view = open_view(args, f"robot-stack-replay-{args.episode}")
    if view is not None:
        from robot_stack.viewer.episode_view import log_episode

        try:
            log_episode(view, episode, result)
        finally:
            view.close()
        out["rerun"] = args.save
    print(json.dumps(out))
    return 0


def add_dataset_parser(subparsers: Any) -> None:
    """Add ``record`` and ``replay`` to the ``robot-stack`` command line."""
    rec = subparsers.add_parser(
        "record",
        help="record teleoperated episodes (LeRobot layout + depth + calibration)",
        epilog="examples:\n  robot-stack record --teleop expert --episodes 20 --out data/reach\n"
        "  robot-stack record --teleop keyboard --live --out data/jog --display  # keys jog the arm\n"
        "  robot-stack record --teleop expert --episodes 5 --out data/reach --resume",
    )
    rec.add_argument("--out", required=True, help="dataset folder")
    rec.add_argument(
        "--teleop", default="expert", choices=["expert", "keyboard", "spacemouse", "leader"], help="command source"
    )
    rec.add_argument("--episodes", type=int, default=10, help="episodes to record (live: stop after this many)")
    rec.add_argument("--seed", type=int, default=0, help="seed of the first episode (resumed runs continue from it)")
    rec.add_argument("--fps", type=int, default=10, help="frames per second (default 10 = the policy rate)")
    rec.add_argument("--cameras", default="front,side", help="simulated cameras to record (default front,side)")
    rec.add_argument("--width", type=int, default=640)
    rec.add_argument("--height", type=int, default=480)
    rec.add_argument("--max-duration", type=float, default=8.0, help="episode time limit, seconds")
    rec.add_argument("--queue", type=int, default=64, help="frames each recording stream may buffer")
    rec.add_argument("--resume", action="store_true", help="repair an existing dataset's index and append to it")
    rec.add_argument("--live", action="store_true", help="real-time simulation, keys from the terminal (no Enter)")
    add_view_arguments(rec)
    add_robot_argument(rec)
    rec.add_argument(
        "--task",
        default="",
        help='an instruction of the tabletop suite (e.g. "touch the blue cylinder"): its objects, expert and label',
    )
    rec.set_defaults(func=_cmd_record)

    rep = subparsers.add_parser(
        "replay",
        help="replay a recorded episode in the simulator; plots, video",
        epilog="examples:\n  robot-stack replay data/reach --episode 3 --plot ep3.png\n"
        "  robot-stack replay data/reach --episode 0 --save ep0.rrd   # a rerun recording",
    )
    rep.add_argument("dataset", help="dataset folder")
    rep.add_argument("--episode", type=int, default=0)
    rep.add_argument("--source", default="highrate", choices=["highrate", "actions"], help="commands to replay")
    rep.add_argument("--plot", help="save a PNG (RGB, depth, base-frame point cloud, trajectories) here")
    rep.add_argument("--frame", type=int, default=None, help="frame shown in the plot (default: middle)")
    rep.add_argument("--video", help="save an MP4 of the cameras (RGB over depth) here")
    rep.add_argument("--rerun", help=argparse.SUPPRESS)  # the old name of --save
    add_view_arguments(rep)
    rep.set_defaults(func=_cmd_replay)
