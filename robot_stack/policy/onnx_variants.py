"""ONNX model files as data: which files hold a model's weights, their digest, and reduced-precision variants.

* :func:`model_files` / :func:`weights_digest`: a model over 2 GB keeps its weights in external data files next to
  the ``.onnx``; an engine cache keyed on the ``.onnx`` alone would reuse a stale engine after retraining. The
  digest covers every file the model reads.
* :func:`fp16_variant` and :func:`int8_qdq_variant`: TensorRT 11 builds strongly typed networks only (its
  ``BuilderFlag.FP16``/``INT8`` and the INT8 calibrator are gone), so reduced precision must be in the ONNX graph:
  FP16 weights and arithmetic with FP32 inputs/outputs (ONNX Runtime's converter), or explicit INT8 Q/DQ nodes
  (ONNX Runtime's static quantizer: symmetric, per-channel weights, calibrated on recorded frames; biases stay
  FP32 because TensorRT's Q/DQ supports 8-bit types only). Both run on ONNX Runtime's CPU provider too, so the
  accuracy gate can judge them anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robot_stack.errors import PolicyError

__all__ = ["file_sha256", "fp16_variant", "int8_qdq_variant", "model_files", "weights_digest"]

log = logging.getLogger("robot_stack.policy.onnx_variants")

#: Write variants with external data above this size (protobuf's hard limit is 2 GiB).
_EXTERNAL_ABOVE_BYTES = 1_800_000_000


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(onnx_path: str | os.PathLike[str]) -> tuple[Path, ...]:
    """The ``.onnx`` file and every external data file its tensors (initializers, ``Constant`` attributes,
    subgraphs) reference, each once, in that order.

    Raises:
        PolicyError: the model cannot be read, or an external data file is missing or outside the model's folder.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    path = Path(onnx_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise PolicyError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from exc
    base = path.parent.resolve()
    out: list[Path] = [path]
    seen: set[Path] = set()
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        data = (base / location).resolve()
        if base not in data.parents:
            raise PolicyError(f"{path}: tensor {tensor.name!r} points outside the model folder ({location!r})")
        if not data.is_file():
            raise PolicyError(f"{path}: external data file {data} of tensor {tensor.name!r} is missing")
        if data not in seen:
            seen.add(data)
            out.append(data)
    return tuple(out)


def weights_digest(onnx_path: str | os.PathLike[str]) -> tuple[str, str]:
    """(SHA-256 of the ``.onnx`` file, SHA-256 over its external data files' names and hashes; "" without any)."""
    files = model_files(onnx_path)
    if len(files) == 1:
        return file_sha256(files[0]), ""
    ext = hashlib.sha256()
    for f in files[1:]:
        ext.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return file_sha256(files[0]), ext.hexdigest()


def _save(model: object, out: Path) -> Path:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp{os.getpid()}{out.suffix}")
    big = model.ByteSize() > _EXTERNAL_ABOVE_BYTES  # type: ignore[attr-defined]
    onnx.save(model, str(tmp), save_as_external_data=big, location=f"{out.name}.data" if big else None)
    tmp.replace(out)
    return out


def fp16_variant(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write an FP16 copy of the model (weights and arithmetic in FP16, inputs/outputs keep their types) to ``out``
    unless it exists; return its path. For TensorRT 11's strongly typed FP16 build."""
    out = Path(out)
    if out.is_file():
        return out
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(onnx_path))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=model.ByteSize() > 2**31)
    except Exception as exc:
        raise PolicyError(f"cannot convert {onnx_path} to FP16: {type(exc).__name__}: {exc}") from exc
    log.info("wrote the FP16 variant of %s to %s", onnx_path, out)
    return _save(converted, out)


def int8_qdq_variant(
    onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], feeds: Sequence[Mapping[str, np.ndarray]]
) -> Path:
    """Write an INT8 Q/DQ copy of the model calibrated on ``feeds`` (the model's own, already normalised inputs)
    to ``out`` unless it exists; return its path. For TensorRT 11's explicit quantization.

    Raises:
        PolicyError: no calibration feeds, or the quantizer fails.
    """
    out = Path(out)
    if out.is_file():
        return out
    if not feeds:
        raise PolicyError("INT8 quantization needs calibration inputs (recorded frames); pass --calibration-data")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._it, None)
            return None if item is None else {k: np.asarray(v) for k, v in item.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        quantize_static(
            str(onnx_path),
            str(tmp),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise PolicyError(f"cannot quantize {onnx_path} to INT8 Q/DQ: {type(exc).__name__}: {exc}") from exc
    tmp.replace(out)
    log.info("wrote the INT8 Q/DQ variant of %s (%d calibration sets) to %s", onnx_path, len(feeds), out)
    return out
