"""Model runtime: manifests, the ONNX Runtime backend, and the policy server glue.

Heavy imports (onnxruntime) happen when :class:`OnnxPolicy` is instantiated, not on package import.
"""

from __future__ import annotations

from robot_stack.policy.manifest import NormStats, PolicyManifest, TensorSpec
from robot_stack.policy.runtime import OnnxPolicy, available_providers

__all__ = ["NormStats", "OnnxPolicy", "PolicyManifest", "TensorSpec", "available_providers"]
