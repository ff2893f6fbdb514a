"""scripts/gpu_check.py: on this CPU machine every GPU line is an INFO skip and nothing fails; through the fake
tensorrt/cuda modules and a fake onnxruntime-gpu build its GPU sections run end to end (build, gate, timing,
cache hit, read-only cache) and report PASS."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from fake_gpu import fake_gpu, fake_ort_gpu

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
LINE = re.compile(r"^(PASS|FAIL|INFO) ")


def test_gpu_check_on_this_cpu_machine_skips_with_info_and_never_fails() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", "3", "--models"], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines and all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)]
    assert not any(line.startswith("FAIL") for line in lines)
    text = "\n".join(lines)
    assert "INFO toy-batch8: native TensorRT skipped" in text and "provider skipped: not in this build" in text
    assert re.search(r"INFO toy-batch8: ONNX Runtime CPU p50 batch 1 [\d.]+ ms, batch 8 [\d.]+ ms", text)
    assert lines[-1].startswith("PASS gpu_check finished")


def test_gpu_check_sections_through_the_fake_gpu(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    fake_ort_gpu(monkeypatch)
    with fake_gpu(monkeypatch, "10.16.1.11"):
        rc = module.main(["--quick", "--runs", "3", "--models"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert all(LINE.match(line) for line in lines)
    text = "\n".join(lines)
    assert rc == 0 and not any(line.startswith("FAIL") for line in lines), text
    assert "INFO GPU 0: NVIDIA H200, compute capability 9.0" in text
    assert re.search(r"PASS toy-batch8: TensorRT 10.16.1.11 fp16 built and gated", text)
    assert re.search(r"INFO toy-batch8: TensorRT 10.16.1.11 fp16: batch 1 p50 .* batch 8 p50", text)
    assert "PASS toy-batch8: TensorRT 10.16.1.11 fp16: second load hits the engine cache" in text
    assert "PASS toy-batch8: TensorRT 10.16.1.11 fp16: read-only cache -> engine served from memory" in text
    assert "PASS toy-batch8: ONNX Runtime tensorrt provider loaded and gated" in text
    assert "PASS toy-batch8: ONNX Runtime tensorrt provider: engine cache holds 1 file(s)" in text
    # the TensorRT EP cannot write its cache: the gated chain serves on the CUDA provider instead, with the reason
    assert re.search(
        r"PASS toy-batch8: ONNX Runtime tensorrt provider: unwritable cache -> serving on cuda \(tensorrt: ", text
    )
