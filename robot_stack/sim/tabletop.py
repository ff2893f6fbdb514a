"""The language-conditioned tabletop suite: three objects on the table, one instruction per episode.

Objects (colour and shape): the red cube (the demo's ``cube`` body, 5 cm), a green cube (5 cm) and a blue cylinder
(5 cm across, 6 cm tall), placed at random on the table in front of the robot for every episode (seeded), all three
at once (:func:`place_objects`). Instructions (:data:`INSTRUCTIONS`), each with a measurable success:

=================================== ===============================================================================
``touch the red cube``              a finger touches the red cube, or the TCP comes within 2 cm of its top centre
``touch the blue cylinder``         the same for the blue cylinder
``touch the green cube``            the same for the green cube
``touch the object nearest the      the same for whichever object's centre is nearest the robot base (horizontally;
robot``                             placements keep the nearest at least 3 cm nearer than the next)
``push the green cube to the left`` the green cube ends 5 cm further along +y (the robot's left) than it started
=================================== ===============================================================================

An episode fails when the robot touches any *other* object first (:meth:`TabletopTask.is_failure`), or on timeout.
The touch is an event, as in :class:`~robot_stack.sim.task.ReachTouchTask`. The scripted expert for every
instruction is :func:`robot_stack.sim.expert.tabletop_expert_actions`; :meth:`TabletopTask.expert_goal` gives it
the privileged state it needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.sim.scene import CUBE_BODY, ObjectSpec
from robot_stack.sim.world import SimWorld

log = logging.getLogger("robot_stack.sim.tabletop")

__all__ = [
    "INSTRUCTIONS",
    "OBJECTS",
    "SCENE_OBJECTS",
    "Instruction",
    "TabletopTask",
    "instruction_for",
    "place_objects",
]

#: The extra objects of the suite's scene (the red cube is the scene's own ``cube``); parked off the table's
#: workspace at reset until :func:`place_objects` puts them in front of the robot.
SCENE_OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec("green_cube", "box", 0.05, (0.12, 0.62, 0.18, 1.0), rest_xy=(-0.1, 0.55)),
    ObjectSpec("blue_cylinder", "cylinder", 0.05, (0.12, 0.25, 0.85, 1.0), height_m=0.06, rest_xy=(-0.1, -0.55)),
)
#: Object phrase -> body name.
OBJECTS: dict[str, str] = {"red cube": CUBE_BODY, "green cube": "green_cube", "blue cylinder": "blue_cylinder"}

#: Where objects are placed (base frame, metres): centres in x, y; at least this far apart; the nearest object at
#: least this much nearer the base than the next.
X_RANGE = (0.36, 0.62)
Y_RANGE = (-0.22, 0.22)
#: The green cube stays where a 5 cm push to the left ends within reach.
GREEN_Y_RANGE = (-0.22, 0.10)
MIN_SEPARATION_M = 0.13
NEAREST_MARGIN_M = 0.03
#: Nothing else within this box around the green cube (dx, dy from, dy to), metres: the push corridor is free.
PUSH_CORRIDOR = (0.09, -0.15, 0.18)
#: Yaw range of the cubes (rad); the pushed cube stays near square to the push.
CUBE_YAW = 0.35
#: Push success: displacement along +y, metres.
PUSH_DISTANCE_M = 0.05


@dataclass(frozen=True)
class Instruction:
    """One instruction of the suite.

    Attributes:
        text: what the robot is told (and sends with every observation).
        kind: ``touch`` or ``push``.
        target: object phrase (a key of :data:`OBJECTS`) or ``nearest`` (resolved per episode).
    """

    text: str
    kind: str
    target: str


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction("touch the red cube", "touch", "red cube"),
    Instruction("touch the blue cylinder", "touch", "blue cylinder"),
    Instruction("touch the green cube", "touch", "green cube"),
    Instruction("touch the object nearest the robot", "touch", "nearest"),
    Instruction("push the green cube to the left", "push", "green cube"),
)


def instruction_for(text: str) -> Instruction:
    """The suite's instruction with this text (case and surrounding spaces ignored); ConfigError listing them."""
    key = " ".join(text.lower().split())
    for instruction in INSTRUCTIONS:
        if instruction.text == key:
            return instruction
    known = [i.text for i in INSTRUCTIONS]
    raise ConfigError(f"instruction {text!r} is not in the tabletop suite; choose one of {known}")


def place_objects(rng: np.random.Generator, max_tries: int = 1000) -> dict[str, tuple[np.ndarray, float]]:
    """Random placements ``body -> (centre xy (2,), yaw)`` of the three objects satisfying the suite's rules
    (separation, a clear nearest object, a free push corridor)."""
    names = list(OBJECTS.values())
    for _ in range(max_tries):
        xy = {}
        for name in names:
            y_range = GREEN_Y_RANGE if name == "green_cube" else Y_RANGE
            xy[name] = np.array([rng.uniform(*X_RANGE), rng.uniform(*y_range)])
        pts = np.stack([xy[n] for n in names])
        gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1)[np.triu_indices(len(names), 1)]
        if gaps.min() < MIN_SEPARATION_M:
            continue
        dist = np.sort(np.linalg.norm(pts, axis=1))
        if dist[1] - dist[0] < NEAREST_MARGIN_M:
            continue
        g = xy["green_cube"]
        dx, y_lo, y_hi = PUSH_CORRIDOR
        if any(abs(xy[n][0] - g[0]) < dx and y_lo < xy[n][1] - g[1] < y_hi for n in names if n != "green_cube"):
            continue
        yaw = {n: float(rng.uniform(-CUBE_YAW, CUBE_YAW)) if n != "blue_cylinder" else 0.0 for n in names}
        return {n: (xy[n], yaw[n]) for n in names}
    raise ConfigError(f"no placement satisfying the tabletop rules found in {max_tries} tries")  # pragma: no cover


class TabletopTask:
    """One instruction of the suite on a world whose scene has :data:`SCENE_OBJECTS`.

    Args:
        world: the simulated cell (built with ``objects=SCENE_OBJECTS``).
        instruction: the instruction (or its text).
        max_duration_s: an episode times out this many clock seconds after :meth:`reset`.
        touch_radius_m: TCP-to-top-centre distance that counts as a touch, metres.
    """

    def __init__(
        self,
        world: SimWorld,
        instruction: Instruction | str = INSTRUCTIONS[0],
        max_duration_s: float = 8.0,
        touch_radius_m: float = 0.02,
    ) -> None:
        missing = [n for n in OBJECTS.values() if n not in world.object_names]
        if missing:
            raise ConfigError(
                f"the simulated cell lacks the tabletop objects {missing}; build it with task.suite: tabletop"
            )
        self.world = world
        self.max_duration_s = max_duration_s
        self.touch_radius_m = touch_radius_m
        self.spec = instruction_for(instruction) if isinstance(instruction, str) else instruction
        self._t_start_ns = world.clock.now_ns()
        self._outcome: str | None = None
        self._outcome_s: float | None = None
        self._start: dict[str, np.ndarray] = {}
        self.target = OBJECTS.get(self.spec.target, CUBE_BODY)

    @property
    def instruction(self) -> str:
        """The instruction text."""
        return self.spec.text

    def set_instruction(self, instruction: Instruction | str) -> None:
        """Use another instruction from the next :meth:`reset` on."""
        self.spec = instruction_for(instruction) if isinstance(instruction, str) else instruction

    def reset(self, seed: int | None = None) -> None:
        """Reset the world (arm home), place the three objects (seeded), resolve the target, restart the clock."""
        self.world.reset(seed)
        rng = np.random.default_rng(None if seed is None else 7_000_003 + seed)
        for name, (xy, yaw) in place_objects(rng).items():
            half = 0.03 if name == "blue_cylinder" else 0.025
            self.world.set_object_pose(name, np.array([xy[0], xy[1], half]), yaw)
        self._start = {n: self.world.object_pose(n).translation for n in self.world.object_names}
        self.target = self.nearest_object() if self.spec.target == "nearest" else OBJECTS[self.spec.target]
        self._t_start_ns = self.world.clock.now_ns()
        self._outcome = None
        self._outcome_s = None

    def nearest_object(self) -> str:
        """Body name of the object whose centre is nearest the robot base, horizontally (at the reset)."""
        names = list(OBJECTS.values())
        centres = [self.world.object_pose(n).translation[:2] for n in names]
        return names[int(np.argmin([np.linalg.norm(c) for c in centres]))]

    def target_top_center(self) -> np.ndarray:
        """(3,) float64 metres, base frame: top centre of the instruction's target object now."""
        return self.world.object_top_center(self.target)

    def expert_goal(self) -> tuple[str, np.ndarray]:
        """What the scripted expert needs: (``touch`` and the target's top centre) or (``push`` and the pushed
        object's centre), base frame, metres."""
        if self.spec.kind == "push":
            return "push", self.world.object_pose(self.target).translation
        return "touch", self.target_top_center()

    def tcp_distance_m(self, name: str | None = None) -> float:
        """Distance from the TCP to the top centre of object ``name`` (default: the instruction's target), metres."""
        with self.world.lock:
            top = self.world.object_top_center(self.target if name is None else name)
            return float(np.linalg.norm(self.world.tcp_pose().translation - top))

    def pushed_m(self) -> float:
        """How far the target moved along +y since the reset, metres."""
        return float(self.world.object_pose(self.target).translation[1] - self._start[self.target][1])

    def _update(self) -> None:
        if self._outcome is not None:
            return
        with self.world.lock:
            others = [n for n in self.world.object_names if n != self.target]
            if any(self.world.robot_contacts(n) > 0 for n in others):
                touched = [n for n in others if self.world.robot_contacts(n) > 0]
                self._outcome = f"touched {touched[0]}"
            elif self.spec.kind == "push":
                if self.pushed_m() >= PUSH_DISTANCE_M:
                    self._outcome = "success"
            elif self.world.finger_contacts(self.target) > 0 or self.tcp_distance_m() <= self.touch_radius_m:
                self._outcome = "success"
        if self._outcome is not None:
            self._outcome_s = self.elapsed_s()

    def touched_object(self) -> str | None:
        """The body the episode ended on: the target on success, the wrongly touched object on failure, else None."""
        self._update()
        if self._outcome == "success":
            return self.target
        if self._outcome is not None and self._outcome.startswith("touched "):
            return self._outcome.removeprefix("touched ")
        return None

    def is_success(self) -> bool:
        """True once the instruction was carried out (before any other object was touched)."""
        self._update()
        return self._outcome == "success"

    def is_failure(self) -> bool:
        """True once another object than the target was touched first."""
        self._update()
        return self._outcome is not None and self._outcome != "success"

    @property
    def time_to_success_s(self) -> float | None:
        """Episode seconds at which success was first seen, or None."""
        return self._outcome_s if self._outcome == "success" else None

    def elapsed_s(self) -> float:
        """Clock seconds since :meth:`reset`."""
        return (self.world.clock.now_ns() - self._t_start_ns) / 1e9

    def is_timeout(self) -> bool:
        return self.elapsed_s() >= self.max_duration_s

    def is_done(self) -> bool:
        """Episode over: success, a wrong object touched, or timeout."""
        self._update()
        return self._outcome is not None or self.is_timeout()
