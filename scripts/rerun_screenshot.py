"""Screenshot of rerun's web viewer showing a recording, in headless Chromium (Debian's `chromium`), for the README.

    python scripts/rerun_screenshot.py demo.rrd docs/img/viewer.png [--wait 60] [--time 3.5]

Serves the recording with the `rerun` CLI of the rerun-sdk wheel (web viewer + gRPC on loopback), opens it in
headless Chromium (WebGL on SwiftShader: software rendering, no GPU needed) through the DevTools protocol, waits for
the viewer to load and draw, saves a PNG. What it shows is what the web viewer draws for the file; nothing is edited.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rrd")
    ap.add_argument("png")
    ap.add_argument("--wait", type=float, default=45.0, help="seconds to let the viewer load and draw")
    ap.add_argument("--size", default="1600,1000")
    ap.add_argument("--web-port", type=int, default=9097)
    ap.add_argument("--grpc-port", type=int, default=9887)
    ap.add_argument("--devtools-port", type=int, default=9229)
    args = ap.parse_args()
    # `timeout`, a CI job or kill ends us with SIGTERM: unwind through the finally below, which stops the viewer and
    # the browser (they run in their own process groups and would otherwise outlive us, busy rendering)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    from websockets.sync.client import connect

    rerun = shutil.which("rerun", path=os.path.dirname(sys.executable)) or "rerun"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("apt install chromium")
    env = {**os.environ, "RERUN_ANALYTICS": "false"}
    server = subprocess.Popen(
        [rerun, args.rrd, "--serve-web", "--web-viewer-port", str(args.web_port), "--port", str(args.grpc_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # the `rerun` entry point runs the viewer binary as a child: stop the group
    )
    profile = tempfile.mkdtemp(prefix="chromium-")
    browser = None
    try:
        _wait_http(f"http://127.0.0.1:{args.web_port}/", 30)
        browser = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--use-gl=angle",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                f"--window-size={args.size}",
                f"--remote-debugging-port={args.devtools_port}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_http(f"http://127.0.0.1:{args.devtools_port}/json/version", 30)
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{args.devtools_port}/json"))
        ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
        grpc = f"rerun%2Bhttp%3A%2F%2F127.0.0.1%3A{args.grpc_port}%2Fproxy"
        with connect(ws_url, max_size=None) as ws:
            ws.send(json.dumps({"id": 1, "method": "Page.navigate", "params": {
                "url": f"http://127.0.0.1:{args.web_port}/?url={grpc}&renderer=webgl"}}))
            time.sleep(args.wait)
            ws.send(json.dumps({"id": 2, "method": "Page.captureScreenshot", "params": {"format": "png"}}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == 2:
                    break
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        Path(args.png).write_bytes(base64.b64decode(msg["result"]["data"]))
        print(f"wrote {args.png}")
    finally:
        for proc in (browser, server):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # the group this script started, nothing else
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
