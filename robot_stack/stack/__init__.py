"""One stack, assembled once: :class:`StackConfig` (YAML presets in ``robot_stack/configs``) and
:func:`build_stack`, used by the demo, the hardware-in-the-loop harness, evaluation, recording, the ROS nodes and
``robot-stack up``; :func:`run_live_episode` is the live policy loop, :class:`LockstepRig` the simulated-time one.
"""

from robot_stack.stack.build import (
    EpisodeStack,
    Stack,
    build_cycle,
    build_decoder,
    build_executor,
    build_process_executor,
    build_scheduler,
    build_stack,
    terminate_on_signals,
)
from robot_stack.stack.config import StackConfig, available_presets, load_stack_config
from robot_stack.stack.live import run_live_episode

__all__ = [
    "EpisodeStack",
    "Stack",
    "StackConfig",
    "available_presets",
    "build_cycle",
    "build_decoder",
    "build_executor",
    "build_process_executor",
    "build_scheduler",
    "build_stack",
    "load_stack_config",
    "run_live_episode",
    "terminate_on_signals",
]
