"""``ros2 launch <file> name:=value ...`` without the ``ros2`` CLI: what ros2launch's ``launch_a_launch_file`` does,
with the real ``launch`` API (test helper, run as a script by tests/test_launch_real.py).

    python tests/launch_runner.py launch/sim.launch.py seed:=3
"""

from __future__ import annotations

import sys

from launch.launch_description_sources import AnyLaunchDescriptionSource

import launch


def main(argv: list[str]) -> int:
    path, arguments = argv[0], argv[1:]
    service = launch.LaunchService(argv=arguments, noninteractive=True)
    parsed = [tuple(a.split(":=", 1)) for a in arguments]
    service.include_launch_description(
        launch.LaunchDescription(
            [launch.actions.IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=parsed)]
        )
    )
    return int(service.run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
