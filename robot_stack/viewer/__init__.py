"""The live view of a running stack (rerun): ``--display`` and ``--save out.rrd`` on demo, record, replay, hil, up.

:class:`~robot_stack.viewer.live.LiveView` owns the recording stream and the entity layout;
:class:`~robot_stack.viewer.stack_view.StackView` feeds it from a built stack's cycles;
:func:`~robot_stack.viewer.readback.recording_contents` reads a saved ``.rrd`` back (entities, timelines).
"""

from robot_stack.viewer.cli import add_view_arguments, open_view
from robot_stack.viewer.live import LiveView
from robot_stack.viewer.readback import recording_contents

__all__ = ["LiveView", "add_view_arguments", "open_view", "recording_contents"]
