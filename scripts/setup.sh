#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 / Ubuntu machine: system libraries for offscreen rendering, a virtual
# environment in .venv with robot-stack and its test tools. Fast when nothing changed (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${ROBOT_STACK_VENV:-.venv}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_packages=(libosmesa6 libegl1 libgl1 libglib2.0-0 libusb-1.0-0 libgomp1)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
    fi
fi

stamp="$VENV/.robot-stack-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing robot-stack and dependencies into $VENV (first run takes a few minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[cpu,dev]"  # GPU machines: README "GPU" (cpu -> gpu, never both)
    # openpi interop tests and the transport bench peer: openpi-client pins numpy<2 in its metadata but runs on
    # numpy 2 (websockets + msgpack)
    "$VENV/bin/python" -m pip install -q --no-deps openpi-client==0.1.2
    echo "$want" > "$stamp"
fi
