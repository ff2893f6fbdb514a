"""ROS-free checks behind the nodes: image encodings and sizes, stamps, trajectories, joint states, clouds,
diagnostics levels, and the streamed camera/arm the policy client and executor run on. No graph needed."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from robot_stack.errors import CameraError, RobotError, ShapeError
from robot_stack.graph.diagnostics import ERROR, OK, STALE, WARN, StreamMonitor, calibration_health, worst
from robot_stack.graph.messages import (
    ImageFields,
    color_from_image,
    depth_from_image,
    frame_from_images,
    image_from_fields,
    image_to_fields,
    join_stamp,
    mono_to_wall,
    positions_by_name,
    split_stamp,
    stamp_problem,
    trajectory_from_points,
    trajectory_to_points,
    wall_to_mono,
    xyz_cloud,
)
from robot_stack.graph.streams import StreamedArm, StreamedCamera
from robot_stack.robots import panda
from robot_stack.types import CameraModel, JointTrajectory, Pose

RNG = np.random.default_rng(0)
COLOR = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
DEPTH = RNG.integers(0, 4000, (48, 64), dtype=np.uint16)


def test_image_round_trip_every_encoding():
    for arr, enc in [(COLOR, "rgb8"), (COLOR, "bgr8"), (DEPTH, "16UC1"), (DEPTH, "mono16"), (COLOR[..., 0], "mono8")]:
        f = image_to_fields(arr, enc)
        assert (f.height, f.width) == arr.shape[:2] and len(f.data) == f.height * f.step
        np.testing.assert_array_equal(image_from_fields(f), arr)
    depth_m = DEPTH.astype(np.float32) * 0.001
    np.testing.assert_array_equal(image_from_fields(image_to_fields(depth_m, "32FC1")), depth_m)


def test_bgr_is_reordered_and_padding_and_big_endian_are_honoured():
    f = image_to_fields(COLOR[..., ::-1].copy(), "bgr8")
    np.testing.assert_array_equal(color_from_image(f), COLOR)
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)
    padded[:, : 64 * 3] = COLOR.reshape(48, -1)
    np.testing.assert_array_equal(image_from_fields(ImageFields("rgb8", 48, 64, 64 * 3 + 8, padded.tobytes())), COLOR)
    big = ImageFields("16UC1", 48, 64, 128, DEPTH.astype(">u2").tobytes(), is_bigendian=True)
    np.testing.assert_array_equal(image_from_fields(big), DEPTH)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (ImageFields("yuv422", 48, 64, 128, b"\0" * 48 * 128), "not supported"),
        (ImageFields("rgb8", 48, 64, 64 * 3, b"\0" * 100), "needs"),
        (ImageFields("rgb8", 48, 64, 10, b"\0" * 480), "shorter"),
        (ImageFields("rgb8", 0, 64, 192, b""), "positive"),
    ],
)
def test_malformed_images_are_refused_with_the_reason(fields, match):
    with pytest.raises(ShapeError, match=match):
        image_from_fields(fields)


def test_wrong_stream_encodings_and_mismatched_sizes_are_refused():
    color, depth = image_to_fields(COLOR, "rgb8"), image_to_fields(DEPTH, "16UC1")
    with pytest.raises(ShapeError, match="colour image has encoding '16UC1'"):
        color_from_image(depth)
    with pytest.raises(ShapeError, match="depth image has encoding 'rgb8'"):
        depth_from_image(color, 0.001)
    small = image_to_fields(DEPTH[:24, :32].copy(), "16UC1")
    with pytest.raises(ShapeError, match="aligned"):
        frame_from_images(color, small, 0.001, 1, "front", 1)
    with pytest.raises(ShapeError, match="calibration is for 640x480"):
        frame_from_images(color, depth, 0.001, 1, "front", 1, expect_size=(640, 480))
    frame = frame_from_images(color, depth, 0.001, 5, "front", 3, expect_size=(64, 48))
    assert frame.seq == 3 and frame.t_capture_ns == 5
    np.testing.assert_array_equal(frame.depth, DEPTH)


def test_depth_units_follow_the_requested_scale():
    metres = image_to_fields(np.array([[0.5, np.nan], [0.0, 1.2344]], np.float32), "32FC1")
    np.testing.assert_array_equal(depth_from_image(metres, 0.001), [[500, 0], [0, 1234]])
    mm = image_to_fields(np.array([[500, 1000]], np.uint16), "16UC1")
    np.testing.assert_array_equal(depth_from_image(mm, 0.0001), [[5000, 10000]])


def test_stamps_split_join_and_convert_between_clocks():
    t = 1_795_642_388_970_636_106
    assert join_stamp(*split_stamp(t)) == t and split_stamp(t)[1] < 1_000_000_000
    mono = time.monotonic_ns()
    assert abs(wall_to_mono(mono_to_wall(mono)) - mono) < 5_000_000  # offset re-measured: µs-level jitter only


def test_stamp_problems():
    now = 10_000_000_000
    assert stamp_problem(now - 100_000_000, now, 0.25) is None
    assert stamp_problem(now - 400_000_000, now, 0.25).startswith("stale: 400 ms")
    assert stamp_problem(now + 200_000_000, now, 0.25).startswith("future")
    assert stamp_problem(0, now, 0.25).startswith("unstamped")


def test_trajectory_round_trip_and_reordering():
    names = panda.ARM_JOINTS
    t0 = time.monotonic_ns()
    traj = JointTrajectory(names, t0 + np.arange(4) * 100_000_000, RNG.normal(size=(4, 7)))
    stamp_wall, offsets, positions = trajectory_to_points(traj)
    back = trajectory_from_points(names, stamp_wall, offsets, positions)
    assert np.max(np.abs(back.t_ns - traj.t_ns)) < 5_000_000
    np.testing.assert_array_equal(back.positions, traj.positions)
    shuffled = list(reversed(names))
    again = trajectory_from_points(shuffled, stamp_wall, offsets, positions[:, ::-1], want=names)
    np.testing.assert_array_equal(again.positions, traj.positions)


@pytest.mark.parametrize(
    ("offsets", "positions", "match"),
    [
        ([], [], "no points"),
        ([0, 0], [[0.0] * 7, [0.0] * 7], "strictly increasing"),
        ([0], [[np.nan] * 7], "NaN"),
        ([0], [[0.0] * 6], "expected 1 points x 7 joints"),
    ],
)
def test_malformed_trajectories_are_refused(offsets, positions, match):
    with pytest.raises(ShapeError, match=match):
        trajectory_from_points(panda.ARM_JOINTS, 1, offsets, positions)


def test_positions_by_name():
    names = ["finger", *reversed(panda.ARM_JOINTS)]
    values = [0.04, *range(7)]
    q = positions_by_name(names, values, panda.ARM_JOINTS, "js")
    np.testing.assert_array_equal(q, np.arange(7)[::-1])
    with pytest.raises(ShapeError, match="missing"):
        positions_by_name(names[:3], values[:3], panda.ARM_JOINTS, "js")
    with pytest.raises(ShapeError, match="3 joint names but 2"):
        positions_by_name(names[:3], values[:2], panda.ARM_JOINTS[:1], "js")
    with pytest.raises(ShapeError, match="non-finite"):
        positions_by_name(["a"], [np.inf], ["a"], "js")


def test_xyz_cloud_keeps_valid_points_only():
    xyz = np.full((4, 6, 3), np.nan, np.float32)
    xyz[1, 2] = (0.1, 0.2, 0.3)
    xyz[2, 4] = (1.0, 2.0, 3.0)
    pts = xyz_cloud(xyz)
    assert pts.shape == (2, 3) and pts.dtype == np.float32 and pts.flags.c_contiguous
    assert xyz_cloud(xyz, stride=2).shape == (1, 3)


def test_stream_monitor_levels():
    m = StreamMonitor("x", expected_hz=10.0, max_silence_s=1.0)
    t = 1_000_000_000
    assert m.health("n", t).level == STALE
    for i in range(21):
        m.received(t + i * 100_000_000, 0.01)
    now = t + 20 * 100_000_000
    h = m.health("n", now)
    assert h.level == OK and abs(float(h.value("rate_hz")) - 10.0) < 0.6 and h.value("latency_p50_ms") == "10.000"
    m.dropped("encoding", "rgba8")
    h = m.health("n", now)
    assert h.level == WARN and "encoding" in h.message and h.value("drops_encoding") == "1"
    assert m.health("n", now).level == OK  # drops are reported once
    assert m.health("n", now + 3_000_000_000).level == STALE
    slow = StreamMonitor("y", expected_hz=10.0)
    for i in range(5):
        slow.received(t + i * 500_000_000)
    assert slow.health("n", t + 2_000_000_000).level == WARN
    assert worst([h, m.health("n", now + 3_000_000_000)]) == STALE


def test_calibration_health():
    now = datetime.now(timezone.utc)
    ok = calibration_health("cam", "front", now - timedelta(days=1), 30, {"rms_px": 0.2}, now)
    assert ok.level == OK and ok.value("residual_rms_px") == "0.200"
    assert calibration_health("cam", "front", now - timedelta(days=28), 30, {}, now).level == WARN
    assert calibration_health("cam", "front", now - timedelta(days=31), 30, {}, now).level == ERROR


def test_streamed_camera_pairs_by_stamp_and_refuses_bad_pairs():
    model = CameraModel(64, 48, 50.0, 50.0, 32.0, 24.0)
    cam = StreamedCamera("front", model)
    with pytest.raises(CameraError, match="no complete"):
        cam.read()
    wall = time.time_ns()
    color, depth = image_to_fields(COLOR, "rgb8"), image_to_fields(DEPTH, "16UC1")
    # interleaved arrival: colour of the next capture before depth of this one
    cam.push_color(wall, color)
    cam.push_color(wall + 1, color)
    cam.push_depth(wall, depth)
    first = cam.read()
    assert first.seq == 1 and abs(first.t_capture_ns - wall_to_mono(wall)) < 5_000_000
    cam.push_depth(wall + 1, depth)
    assert cam.read().seq == 2
    cam.push_color(wall + 2, color)  # a pair of the wrong size: refused, the last good frame stays
    with pytest.raises(ShapeError):
        cam.push_depth(wall + 2, image_to_fields(DEPTH[:24].copy(), "16UC1"))
    assert cam.read().seq == 2 and cam.monitor.drops["image"] == 1
    cam.push_color(wall + 1, color)  # an old capture completing late never replaces a newer frame
    cam.push_depth(wall + 1, depth)
    assert cam.read().seq == 2 and cam.monitor.drops["out_of_order"] == 1


def test_streamed_arm_refuses_missing_and_stale_states():
    sent = []
    arm = StreamedArm(panda.ARM_JOINTS, panda.LIMITS, lambda q: Pose.identity("base", "tcp"),
                      lambda q, g: sent.append(q), 0.1)  # fmt: skip
    with pytest.raises(RobotError, match="no joint state"):
        arm.read_state()
    arm.update(time.monotonic_ns(), panda.HOME_Q, np.zeros(7))
    np.testing.assert_array_equal(arm.read_state().q, panda.HOME_Q)
    arm.update(time.monotonic_ns() - 500_000_000, panda.HOME_Q, np.zeros(7))
    with pytest.raises(RobotError, match="stale"):
        arm.read_state()
    arm.command(panda.HOME_Q)
    assert len(sent) == 1
    read_only = StreamedArm(panda.ARM_JOINTS, panda.LIMITS, lambda q: Pose.identity(), None, 0.1)
    with pytest.raises(RobotError, match="only reads"):
        read_only.command(panda.HOME_Q)


def test_streamed_arm_pairs_a_late_frame_with_the_state_at_its_capture_time():
    arm = StreamedArm(panda.ARM_JOINTS, panda.LIMITS, lambda q: Pose.identity("base", "tcp"), None, 0.02, history=50)
    with pytest.raises(RobotError, match="no joint state"):
        arm.state_at(0)
    assert arm.latest_t_ns is None
    t0 = 1_000_000_000
    for k in range(40):  # 100 Hz: q0 = k * 0.01 measured at t0 + k * 10 ms
        arm.update(t0 + k * 10_000_000, panda.HOME_Q + 0.01 * k, np.zeros(7))
    # a frame captured at t0 + 127 ms and handled after every later state arrived gets the state of t0 + 120 ms:
    # the newest measured at or before its capture, not the newest at handling, nor a nearer one measured after it
    assert arm.latest_t_ns == t0 + 390_000_000
    state = arm.state_at(t0 + 127_000_000)
    assert state.t_ns == t0 + 120_000_000
    np.testing.assert_allclose(state.q, panda.HOME_Q + 0.12)
    assert arm.state_at(t0 + 130_000_000).t_ns == t0 + 130_000_000  # measured at the capture instant
    assert arm.state_at(t0 + 395_000_000 + 15_000_000).t_ns == t0 + 390_000_000  # past the newest, within 20 ms
    with pytest.raises(RobotError, match="measured 30 ms from"):
        arm.state_at(t0 + 420_000_000)  # newest is 30 ms before: further than max_state_age_s
    assert arm.state_at(t0 - 15_000_000).t_ns == t0  # nothing kept from before: the earliest, 15 ms after
    with pytest.raises(RobotError, match="40 kept"):
        arm.state_at(t0 - 100_000_000)  # before everything kept, further than max_state_age_s
    assert StreamedArm(panda.ARM_JOINTS, panda.LIMITS, lambda q: Pose.identity(), None, 0.1)._history.maxlen == 1
    with pytest.raises(ValueError, match="history"):
        StreamedArm(panda.ARM_JOINTS, panda.LIMITS, lambda q: Pose.identity(), None, 0.1, history=0)


def test_clock_offset_keeps_the_tightest_bracket_so_a_preempted_read_does_not_shift_stamps(monkeypatch):
    from robot_stack.graph import messages

    # first bracket: the thread was preempted 5 ms between the monotonic reads; second: 100 ns wide
    mono = iter([1_000_000, 6_000_000, 10_000_000, 10_000_100])
    wall = iter([1_700_000_000_003_000_000, 1_700_000_000_010_000_000])
    monkeypatch.setattr(messages.time, "monotonic_ns", lambda: next(mono))
    monkeypatch.setattr(messages.time, "time_ns", lambda: next(wall))
    assert messages.wall_minus_mono_ns() == 1_700_000_000_010_000_000 - 10_000_050  # the tight bracket's midpoint
    monkeypatch.undo()
    # and on the real clocks: a round trip returns the stamp (the offset does not drift within microseconds)
    t = time.monotonic_ns()
    assert abs(messages.wall_to_mono(messages.mono_to_wall(t)) - t) < 1_000_000
