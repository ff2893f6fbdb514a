#!/usr/bin/env bash
# The demo: MuJoCo Panda + simulated RGB-D camera -> calibration -> ZeroMQ policy server (ONNX Runtime) ->
# decoder (IK) -> 500 Hz executor -> simulated arm. Extra arguments go to `robot-stack demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${ROBOT_STACK_VENV:-.venv}/bin/robot-stack" demo "$@"
