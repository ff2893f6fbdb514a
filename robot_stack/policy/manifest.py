"""Model manifest: the YAML file next to an ONNX model that says what goes in, what comes out and what it means.

Example ``models/reach.yaml`` (next to ``models/reach.onnx``)::

    model_id: reach-v1
    onnx: reach.onnx                 # relative to this file
    inputs:
      - {name: state, dtype: float32, shape: [-1, 11]}       # -1 = dynamic (e.g. batch)
      - {name: front/rgb, dtype: uint8, shape: [-1, 480, 640, 3]}
      - {name: front/xyz, dtype: float32, shape: [-1, 480, 640, 3], allow_nonfinite: true}  # NaN = no depth
    outputs:
      - {name: actions, dtype: float32, shape: [-1, 8, 3]}
    action_space: ee_delta_xyz       # meaning of the action vector (see robot_stack.types.ActionChunk)
    action_head: continuous          # continuous | binned | latent_vq | motion_tracks
    horizon: 8                       # actions per chunk
    dt_s: 0.1                        # seconds between consecutive actions of a chunk
    control_rate_hz: 10              # how often the robot asks for a new chunk
    normalization:                   # optional: inputs are normalised, outputs de-normalised, by the runtime
      state: {mean: [...], std: [...]}
      actions: {mean: [0, 0, 0], std: [0.01, 0.01, 0.01]}
    providers: [tensorrt, cuda, cpu]  # preference order when no provider is forced
    max_batch: 8                     # optional: the server may micro-batch up to 8 robots' requests (needs a
                                     # dynamic first dim on every input and output)
    compression: {front/rgb: png}    # optional: per-stream wire codec the clients should use (png|jpeg|zstd|lz4)
    torch: {program: reach.pt2}      # optional: the same model as a torch program for `serve --engine torch`
                                     # (.pt2 = torch.export, .pt/.ts = TorchScript): normalised inputs in, outputs
                                     # out, in manifest order, exactly like the ONNX graph
    flow_matching:                   # optional: the actions are sampled by a flow-matching denoising loop
      step_graph: reach.step.onnx    # the denoising step (noisy actions, tau, context...) -> velocity; `onnx` above
      steps: 10                      # is then the prefix encoder: the model's inputs -> the context tensors below
      context: [{name: ctx, dtype: float32, shape: [-1, 64]}]
      rtc: true                      # accept rtc/prefix + rtc/delay_steps (real-time chunking, docs/protocol.md)
    backbone:                        # optional split-rate model: a heavy backbone run at most at rate_hz per robot
      onnx: backbone.onnx            # whose outputs are cached and fed, by name, into the (light) main model
      rate_hz: 5
      inputs:  [{name: front/rgb, dtype: uint8, shape: [-1, 480, 640, 3]}]
      outputs: [{name: features, dtype: float32, shape: [-1, 512]}]   # each one is an input of the main model

With a backbone, a request carries the backbone's inputs plus the main model's inputs that the backbone does not
produce (:attr:`PolicyManifest.request_inputs`). With ``flow_matching`` (:class:`FlowMatchingSpec`), ``onnx`` is the
prefix encoder (run once per request; its outputs are the ``context``), the step graph is run ``steps`` times by
:mod:`robot_stack.policy.flow`, and ``outputs`` names the one action output the loop produces.

A language-conditioned model declares its instruction input; the server fills it by tokenizing the text of the
request meta (:mod:`robot_stack.policy.instruction`), so it is not a request input::

    instruction: {input: instruction, tokenizer: tokenizer.json, max_tokens: 16, meta_key: task}

A vision-language-action model with an iterative action expert (:mod:`robot_stack.policy.vla`) is two graphs: the
top-level ``onnx`` (and ``torch``) is its **prefix encoder** (vision + language -> the keys/values every denoising
step attends to), ``vla.denoise`` its **denoising step**; ``inputs``/``outputs`` describe the model as a whole (what
the server is fed and answers), ``vla.prefix_inputs``/``vla.prefix_outputs`` the prefix graph::

    vla:
      steps: 10                        # default integration steps K per chunk
      rtc: true                        # accept rtc/prefix + rtc/delay_steps (real-time chunking, docs/protocol.md)
      prefix_inputs:  [...]            # the prefix graph's inputs (a request input may be widened: uint16 -> int32)
      prefix_outputs: [{name: prefix_kv, ...}, {name: prefix_mask, ...}, {name: goal, ...}]
      denoise: {onnx: denoise.onnx, torch: {program: denoise.pt2}, inputs: [noisy_actions, time, state, goal,
                prefix_kv, prefix_mask], outputs: [velocity]}

Every prefix output is fed to the denoising step by name (the project's VLA also hands over its goal point), and so
is every model input the denoising step names (``state``).

``flow_matching:`` and ``vla:`` are two forms of one thing, a flow-matching sampling loop (:class:`SamplerSpec`:
``steps``, ``rtc``, ``guidance_beta``, read and checked once for both; :attr:`PolicyManifest.sampler`,
:meth:`PolicyManifest.sampler_graphs`); they differ only in how they name the two graphs' tensors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import yaml

from robot_stack.config import check_keys, read_yaml, relative_path, resolve_path
from robot_stack.errors import ConfigError
from robot_stack.policy.instruction import InstructionSpec
from robot_stack.types import ActionHead

__all__ = [
    "ACTION_HEADS",
    "DEMO_MANIFEST",
    "PROVIDERS",
    "SHIPPED_MODELS_DIR",
    "TENSOR_DTYPES",
    "TORCH_FORMATS",
    "BackboneSpec",
    "FlowMatchingSpec",
    "NormStats",
    "PolicyManifest",
    "SamplerSpec",
    "TensorSpec",
    "TorchSpec",
    "VLA_NOISY_INPUT",
    "VLA_TIME_INPUT",
    "VLA_VELOCITY_OUTPUT",
    "VlaSpec",
]

#: Action head types the decoders know.
ACTION_HEADS = tuple(h.value for h in ActionHead)
#: The models shipped with the package (``robot_stack/policy/models``).
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent / "models"
#: The demo's policy: ``reach-touch-v1`` (colour key + MLP -> ``ee_delta_xyz`` chunks), built by ``train-demo``.
DEMO_MANIFEST = SHIPPED_MODELS_DIR / "reach-touch-v1.yaml"
#: Execution providers by short name, fastest first.
PROVIDERS = ("tensorrt", "cuda", "cpu")
#: Tensor dtypes a manifest may declare (the wire whitelist).
TENSOR_DTYPES = ("uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool")

_KEYS_REQUIRED = ("model_id", "onnx", "inputs", "outputs", "action_space", "action_head", "horizon", "dt_s")
_KEYS_OPTIONAL = (
    "control_rate_hz",
    "normalization",
    "normalisation",
    "providers",
    "description",
    "max_batch",
    "compression",
    "backbone",
    "torch",
    "flow_matching",
    "instruction",
    "vla",
)
#: Keys of the sections: required, optional.
_BACKBONE_KEYS = ({"onnx", "inputs", "outputs", "rate_hz"}, {"normalization"})
_VLA_DENOISE_KEYS = ({"onnx", "inputs", "outputs"}, {"torch"})
#: Most integration steps a flow-matching section may declare.
_MAX_STEPS = 1000
_Spec = TypeVar("_Spec")
#: Names of the denoising step's own tensors (its other inputs are prefix outputs and model inputs such as state).
VLA_NOISY_INPUT = "noisy_actions"
VLA_TIME_INPUT = "time"
VLA_VELOCITY_OUTPUT = "velocity"
#: Request dtypes the server may widen to the prefix graph's dtype (TensorRT has no uint16 tensors).
_WIDENING = {("uint16", "int32"), ("uint8", "int32"), ("uint16", "float32"), ("uint8", "float32")}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.

    Attributes:
        name: tensor name in the ONNX graph (and on the wire).
        dtype: one of :data:`TENSOR_DTYPES`.
        shape: dims; -1 = dynamic.
        allow_nonfinite: inputs only: NaN/Inf are legitimate values (e.g. XYZ maps with invalid depth).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    allow_nonfinite: bool = False

    def matches_shape(self, shape: tuple[int, ...]) -> bool:
        """True if ``shape`` has this rank and equals every non-dynamic dim."""
        return len(shape) == len(self.shape) and all(w == -1 or w == g for w, g in zip(self.shape, shape, strict=True))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.allow_nonfinite:
            out["allow_nonfinite"] = True
        return out


@dataclass(frozen=True)
class NormStats:
    """``x_norm = (x - mean) / std``; mean/std: float32 arrays broadcastable to the tensor's trailing dims."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        for attr in ("mean", "std"):
            arr = np.array(getattr(self, attr), dtype=np.float32, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)


#: Torch program file suffix -> how it is loaded (``torch.export.load`` or ``torch.jit.load``).
TORCH_FORMATS = {".pt2": "export", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}


@dataclass(frozen=True)
class TorchSpec:
    """The model as a torch program, for the torch engine (:mod:`robot_stack.policy.torch_engine`).

    The program takes the manifest's inputs, normalised, in manifest order and returns its outputs (a tensor or a
    tuple) in manifest order — the contract of the ONNX graph. Loading it needs no model class: ``.pt2`` files are
    ``torch.export`` programs, ``.pt``/``.ts`` TorchScript archives (treat both as code: load only trusted files,
    as with the ONNX model next to them).

    Attributes:
        program: absolute path of the file.
    """

    program: Path

    @property
    def format(self) -> str:
        """``export`` or ``torchscript``."""
        return TORCH_FORMATS[self.program.suffix]


@dataclass(frozen=True)
class BackboneSpec:
    """The heavy half of a split-rate model.

    Attributes:
        onnx_path: absolute path of the backbone's ONNX file.
        inputs, outputs: tensor specs; every output must be an input of the main (decoder) model.
        rate_hz: the backbone runs for a robot only when its cached output is older than ``1 / rate_hz`` s.
        normalization: input name -> stats (as for the main model).
    """

    onnx_path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    rate_hz: float
    normalization: Mapping[str, NormStats] = field(default_factory=dict)

    @property
    def period_ns(self) -> int:
        """Maximum age of a cached backbone output, ns."""
        return int(1e9 / self.rate_hz)

    def to_dict(self, onnx: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "onnx": onnx,
            "rate_hz": self.rate_hz,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }
        if self.normalization:
            out["normalization"] = {
                k: {"mean": v.mean.tolist(), "std": v.std.tolist()} for k, v in self.normalization.items()
            }
        return out


@dataclass(frozen=True)
class SamplerSpec:
    """The sampling loop of a flow-matching action expert: what the two manifest forms, ``flow_matching:``
    (:class:`FlowMatchingSpec`) and ``vla:`` (:class:`VlaSpec`), share. Both are a prefix encoder run once per
    request and a denoising step run ``steps`` times on its outputs, integrated by the one loop
    :mod:`robot_stack.policy.denoise`; the forms differ only in how they name the two graphs' tensors.

    Attributes:
        steps: integration steps K per chunk (1..1000).
        rtc: requests may carry ``rtc/prefix`` + ``rtc/delay_steps`` (real-time chunking, :mod:`.rtc`).
        guidance_beta: the RTC guidance clip (> 0; Black et al. use 5).
    """

    #: The manifest section that declares the loop (``flow_matching`` or ``vla``; errors name its keys).
    section: ClassVar[str] = "sampler"
    #: The section's keys besides ``steps``, ``rtc`` and ``guidance_beta``: (required, optional).
    own_keys: ClassVar[tuple[frozenset[str], frozenset[str]]] = (frozenset(), frozenset())

    steps: int
    rtc: bool = False
    guidance_beta: float = 5.0

    def check(self, manifest: PolicyManifest, where: str) -> None:
        """Raise :class:`ConfigError` unless this loop fits ``manifest``: K in 1..1000, a positive guidance clip, no
        backbone (the prefix encoder plays that part); subclasses check their graphs' tensors against the model's."""
        if manifest.backbone is not None:
            raise ConfigError(
                f"{where}: {self.section} with a backbone is not supported; its prefix encoder plays that part, "
                "export one prefix encoder"
            )
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= _MAX_STEPS:
            raise ConfigError(f"{where}: {self.section}.steps must be an int in 1..{_MAX_STEPS}, got {self.steps!r}")
        if not _positive(self.guidance_beta):
            raise ConfigError(f"{where}: {self.section}.guidance_beta must be > 0, got {self.guidance_beta!r}")

    @classmethod
    def _read_section(cls, raw: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The section as a mapping with its keys (the shared ``steps``, ``rtc``, ``guidance_beta`` and
        :attr:`own_keys`), and its ``steps``, ``rtc`` and ``guidance_beta`` as constructor arguments (their values
        are checked by :meth:`check`, the manifest's other fields being needed for that)."""
        required, optional = cls.own_keys
        raw = check_keys(raw, f"{where}: {cls.section}", {"steps", *required}, {"rtc", "guidance_beta", *optional})
        rtc = raw.get("rtc", cls.rtc)
        if not isinstance(rtc, bool):
            raise ConfigError(f"{where}: {cls.section}.rtc must be true or false, got {rtc!r}")
        return raw, {"steps": raw["steps"], "rtc": rtc, "guidance_beta": raw.get("guidance_beta", cls.guidance_beta)}


@dataclass(frozen=True, kw_only=True)
class FlowMatchingSpec(SamplerSpec):
    """A flow-matching action expert (``flow_matching:`` in the manifest; :mod:`robot_stack.policy.flow` runs it).

    The chunk is integrated from Gaussian noise (``tau = 0``) to actions (``tau = 1``) in ``steps`` Euler steps of
    ``velocity = step_graph(noise_input, time_input, *context)``; the context is computed once per request by the
    manifest's ``onnx`` graph (the prefix encoder: vision, language, state -> keys/values or features), so the
    denoising steps reuse it. Actions are in the model's normalised units (the manifest's normalisation of the
    action output applies to the result).

    Attributes (besides :class:`SamplerSpec`'s ``steps``, ``rtc``, ``guidance_beta``):
        step_graph: absolute path of the denoising-step ONNX file.
        context: the encoder's outputs, each an input of the step graph (names, dtypes, shapes; batch dim -1).
        noise_input, time_input, velocity_output: tensor names of the step graph (``x_t``, ``tau``, ``velocity``).
        seed: seed of the noise generator (None: fresh entropy; set it for reproducible chunks).
    """

    section: ClassVar[str] = "flow_matching"
    own_keys: ClassVar[tuple[frozenset[str], frozenset[str]]] = (
        frozenset({"step_graph", "context"}),
        frozenset({"noise_input", "time_input", "velocity_output", "seed"}),
    )

    step_graph: Path
    context: tuple[TensorSpec, ...]
    noise_input: str = "x_t"
    time_input: str = "tau"
    velocity_output: str = "velocity"
    seed: int | None = None

    def check(self, manifest: PolicyManifest, where: str) -> None:
        """:meth:`SamplerSpec.check`, and: one float32 action output of ``horizon`` steps, unique step-graph inputs."""
        super().check(manifest, where)
        if len(manifest.outputs) != 1:
            raise ConfigError(
                f"{where}: with flow_matching the manifest has exactly one output, the sampled actions "
                f"(-1, horizon, dim); got {[t.name for t in manifest.outputs]}"
            )
        out, horizon = manifest.outputs[0], manifest.horizon
        batched = len(out.shape) == 3 and out.shape[1] == horizon
        single = len(out.shape) == 2 and out.shape[0] == horizon
        if out.dtype != "float32" or not (batched or single) or out.shape[-1] < 1:
            raise ConfigError(
                f"{where}: flow_matching output {out.name!r} must be float32 (-1, {horizon}, dim) (a batched "
                f"model) or ({horizon}, dim), got {out.dtype} {list(out.shape)}"
            )
        names = {self.noise_input, self.time_input, *(t.name for t in self.context)}
        if len(names) != 2 + len(self.context):
            raise ConfigError(f"{where}: flow_matching step-graph input names must be unique, got {sorted(names)}")

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """A YAML-ready mapping; ``step_graph`` relative to ``relative_to`` when given."""
        out: dict[str, Any] = {
            "step_graph": relative_path(self.step_graph, relative_to),
            "steps": self.steps,
            "context": [t.to_dict() for t in self.context],
            "rtc": self.rtc,
            "noise_input": self.noise_input,
            "time_input": self.time_input,
            "velocity_output": self.velocity_output,
            "guidance_beta": self.guidance_beta,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out


@dataclass(frozen=True, kw_only=True)
class VlaSpec(SamplerSpec):
    """The two graphs of a vision-language-action model (see the module docstring).

    Attributes (besides :class:`SamplerSpec`'s ``steps``, ``rtc``, ``guidance_beta``):
        prefix_inputs, prefix_outputs: the prefix encoder's (top-level ``onnx``) tensors.
        denoise_onnx: absolute path of the denoising step's ONNX file.
        denoise_inputs, denoise_outputs: its tensors (:data:`VLA_NOISY_INPUT`, :data:`VLA_TIME_INPUT`, prefix
            outputs, model inputs; :data:`VLA_VELOCITY_OUTPUT`).
        denoise_torch: its torch program, if any.
    """

    section: ClassVar[str] = "vla"
    own_keys: ClassVar[tuple[frozenset[str], frozenset[str]]] = (
        frozenset({"prefix_inputs", "prefix_outputs", "denoise"}),
        frozenset(),
    )

    prefix_inputs: tuple[TensorSpec, ...]
    prefix_outputs: tuple[TensorSpec, ...]
    denoise_onnx: Path
    denoise_inputs: tuple[TensorSpec, ...]
    denoise_outputs: tuple[TensorSpec, ...]
    denoise_torch: TorchSpec | None = None

    def check(self, manifest: PolicyManifest, where: str) -> None:
        """:meth:`SamplerSpec.check`, and: one continuous ``actions`` output; the prefix inputs are model inputs (or
        widened); the denoising step takes the noisy actions, the time, every prefix output and model inputs only,
        and answers the velocity; every model input feeds one of the two graphs."""
        super().check(manifest, where)
        if [t.name for t in manifest.outputs] != ["actions"] or manifest.action_head != ActionHead.CONTINUOUS.value:
            raise ConfigError(f"{where}: a VLA answers one output, actions, with action_head continuous")
        mine = {t.name: t for t in manifest.inputs}
        for spec in self.prefix_inputs:
            top = mine.get(spec.name)
            if (
                top is None
                or len(top.shape) != len(spec.shape)
                or (top.dtype != spec.dtype and (top.dtype, spec.dtype) not in _WIDENING)
            ):
                raise ConfigError(
                    f"{where}: vla.prefix_inputs {spec.name!r} ({spec.dtype}) must be a model input of the same rank "
                    f"and dtype (or widened: {sorted(_WIDENING)})"
                )
        denoise = {t.name: t for t in self.denoise_inputs}
        needed = {VLA_NOISY_INPUT, VLA_TIME_INPUT} | {t.name for t in self.prefix_outputs}
        if not needed <= set(denoise):
            raise ConfigError(f"{where}: vla.denoise.inputs must include {sorted(needed)}, got {sorted(denoise)}")
        rest = set(denoise) - needed
        prefix_names = {t.name for t in self.prefix_inputs}
        if not rest <= set(mine) - prefix_names:
            raise ConfigError(
                f"{where}: vla.denoise input(s) {sorted(rest - set(mine))} are neither prefix outputs nor model inputs"
            )
        if set(mine) != prefix_names | rest:
            raise ConfigError(
                f"{where}: every model input must feed the prefix or the denoising step; unused: "
                f"{sorted(set(mine) - prefix_names - rest)}"
            )
        if [t.name for t in self.denoise_outputs] != [VLA_VELOCITY_OUTPUT]:
            raise ConfigError(f"{where}: vla.denoise.outputs must be exactly [{VLA_VELOCITY_OUTPUT}]")
        if denoise[VLA_NOISY_INPUT].shape[1:] != manifest.outputs[0].shape[1:]:
            raise ConfigError(
                f"{where}: {VLA_NOISY_INPUT} {denoise[VLA_NOISY_INPUT].shape} and actions {manifest.outputs[0].shape} "
                "must agree beyond the batch dim"
            )

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """A YAML-ready mapping; the graphs' paths relative to ``relative_to`` when given."""
        denoise: dict[str, Any] = {
            "onnx": relative_path(self.denoise_onnx, relative_to),
            "inputs": [t.to_dict() for t in self.denoise_inputs],
            "outputs": [t.to_dict() for t in self.denoise_outputs],
        }
        if self.denoise_torch is not None:
            denoise["torch"] = {"program": relative_path(self.denoise_torch.program, relative_to)}
        return {
            "steps": self.steps,
            "prefix_inputs": [t.to_dict() for t in self.prefix_inputs],
            "prefix_outputs": [t.to_dict() for t in self.prefix_outputs],
            "denoise": denoise,
            "rtc": self.rtc,
            "guidance_beta": self.guidance_beta,
        }


@dataclass(frozen=True)
class PolicyManifest:
    """Everything the runtime and the robot side need to know about one exported model.

    Attributes:
        model_id: unique name of this model version.
        onnx_path: absolute path of the ONNX file.
        inputs, outputs: tensor specs, in graph order.
        action_space: meaning of the action vector, e.g. ``"ee_delta_xyz"`` (see ``ActionChunk``).
        action_head: one of :data:`ACTION_HEADS`.
        horizon: actions per chunk (>= 1).
        dt_s: seconds between consecutive actions of a chunk (> 0).
        control_rate_hz: how often a new chunk is requested (> 0); defaults to ``1 / (horizon * dt_s)``.
        normalization: tensor name -> stats; inputs are normalised before the model, outputs de-normalised after.
        providers: preferred execution providers, in order (subset of :data:`PROVIDERS`).
        description: free text.
        source: the YAML file this was loaded from (None if built in code).
        max_batch: most requests (of different robots) the server may run as one micro-batch (1 = no batching);
            > 1 needs a dynamic (-1) first dim on every input and output, of the backbone too.
        compression: request input name -> wire codec (see ``robot_stack.transport.codecs``).
        backbone: optional heavy model run at a lower rate (see :class:`BackboneSpec`).
        torch: optional torch program of the same model (see :class:`TorchSpec`).
        flow_matching: optional flow-matching action expert (see :class:`FlowMatchingSpec`).
        instruction: the input the server fills with the tokenized instruction text (see :class:`InstructionSpec`).
        vla: the prefix encoder / denoising step split of a VLA (see :class:`VlaSpec`); then ``onnx`` and ``torch``
            are the prefix encoder's.
    """

    model_id: str
    onnx_path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    action_space: str
    action_head: str = "continuous"
    horizon: int = 1
    dt_s: float = 0.1
    control_rate_hz: float = 0.0
    normalization: Mapping[str, NormStats] = field(default_factory=dict)
    providers: tuple[str, ...] = ("cpu",)
    description: str = ""
    source: Path | None = None
    max_batch: int = 1
    compression: Mapping[str, str] = field(default_factory=dict)
    backbone: BackboneSpec | None = None
    torch: TorchSpec | None = None
    flow_matching: FlowMatchingSpec | None = None
    instruction: InstructionSpec | None = None
    vla: VlaSpec | None = None

    def __post_init__(self) -> None:
        where = f"manifest {self.source or self.model_id!s}"
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ConfigError(f"{where}: model_id must be a non-empty string")
        if not isinstance(self.action_space, str) or not self.action_space:
            raise ConfigError(f"{where}: action_space must be a non-empty string such as 'ee_delta_xyz'")
        if self.action_head not in ACTION_HEADS:
            raise ConfigError(f"{where}: action_head {self.action_head!r} unknown; expected one of {ACTION_HEADS}")
        object.__setattr__(self, "action_head", ActionHead(self.action_head).value)
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ConfigError(f"{where}: horizon must be an int >= 1, got {self.horizon!r}")
        if not _positive(self.dt_s):
            raise ConfigError(f"{where}: dt_s must be a positive number of seconds, got {self.dt_s!r}")
        rate = self.control_rate_hz or 1.0 / (self.horizon * self.dt_s)
        if not _positive(rate):
            raise ConfigError(f"{where}: control_rate_hz must be a positive number, got {self.control_rate_hz!r}")
        object.__setattr__(self, "control_rate_hz", float(rate))
        object.__setattr__(self, "dt_s", float(self.dt_s))
        object.__setattr__(self, "onnx_path", Path(self.onnx_path))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not self.inputs or not self.outputs:
            raise ConfigError(f"{where}: needs at least one input and one output")
        names = [t.name for t in self.inputs + self.outputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: tensor names must be unique across inputs and outputs, got {names}")
        providers = tuple(self.providers)
        if not providers or any(p not in PROVIDERS for p in providers):
            raise ConfigError(f"{where}: providers {list(providers)} invalid; choose from {PROVIDERS}")
        object.__setattr__(self, "providers", providers)
        specs = {t.name: t for t in self.inputs + self.outputs}
        for name, stats in self.normalization.items():
            spec = specs.get(name)
            if spec is None:
                raise ConfigError(f"{where}: normalization for {name!r}, which is neither an input nor an output")
            if not spec.dtype.startswith("float"):
                raise ConfigError(f"{where}: normalization for {name!r} needs a float tensor, it is {spec.dtype}")
            for label, arr in (("mean", stats.mean), ("std", stats.std)):
                if arr.ndim > len(spec.shape) or any(
                    a != 1 and s not in (-1, a) for a, s in zip(arr.shape[::-1], spec.shape[::-1], strict=False)
                ):
                    raise ConfigError(
                        f"{where}: normalization {name}.{label} shape {arr.shape} does not broadcast to {spec.shape}"
                    )
                if not np.all(np.isfinite(arr)):
                    raise ConfigError(f"{where}: normalization {name}.{label} has non-finite values")
            if np.any(stats.std <= 0):
                raise ConfigError(f"{where}: normalization {name}.std must be > 0 everywhere")
        object.__setattr__(self, "normalization", dict(self.normalization))
        self._check_extensions(where)

    def _check_extensions(self, where: str) -> None:
        """Validate backbone, max_batch and compression (the serving extensions of the manifest)."""
        bb = self.backbone
        if bb is not None:
            if not _positive(bb.rate_hz):
                raise ConfigError(f"{where}: backbone.rate_hz must be a positive number of Hz, got {bb.rate_hz!r}")
            mine = {t.name: t for t in self.inputs}
            for out in bb.outputs:
                if out.name not in mine or mine[out.name].dtype != out.dtype:
                    raise ConfigError(
                        f"{where}: backbone output {out.name!r} ({out.dtype}) must be an input of the main model with "
                        f"the same dtype; main model inputs: {[f'{t.name}:{t.dtype}' for t in self.inputs]}"
                    )
            bb_names = {t.name for t in bb.outputs}
            for spec in bb.inputs:
                if spec.name in bb_names:
                    raise ConfigError(f"{where}: backbone tensor {spec.name!r} is both an input and an output")
                if spec.name in mine and mine[spec.name] != spec:
                    raise ConfigError(f"{where}: {spec.name!r} is declared differently for backbone and main model")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or not 1 <= self.max_batch <= 1024:
            raise ConfigError(f"{where}: max_batch must be an int in 1..1024, got {self.max_batch!r}")
        if self.max_batch > 1:
            tensors = self.inputs + self.outputs + ((bb.inputs + bb.outputs) if bb else ())
            fixed = [t.name for t in tensors if not t.shape or t.shape[0] != -1]
            if fixed:
                raise ConfigError(
                    f"{where}: max_batch {self.max_batch} needs a dynamic first (batch) dim, -1, on every tensor; "
                    f"not so for {fixed}. Export the model with a dynamic batch axis or set max_batch: 1"
                )
        from robot_stack.errors import ProtocolError
        from robot_stack.transport.codecs import check_codec

        requests = {t.name: t for t in self.request_inputs}
        for name, codec in self.compression.items():
            if name not in requests:
                raise ConfigError(f"{where}: compression for {name!r}, which is not a request input ({list(requests)})")
            try:
                check_codec(codec, requests[name].dtype, requests[name].shape)
            except ProtocolError as exc:
                raise ConfigError(f"{where}: compression.{name}: {exc}") from exc
        object.__setattr__(self, "compression", dict(self.compression))
        self._check_sampler(where)
        self._check_instruction(where)

    def _check_sampler(self, where: str) -> None:
        """Validate the flow-matching sampling loop, either form (:meth:`SamplerSpec.check`)."""
        if self.flow_matching is not None and self.vla is not None:
            raise ConfigError(f"{where}: a manifest has flow_matching or vla, not both")
        if self.sampler is not None:
            self.sampler.check(self, where)

    @property
    def action_dim(self) -> int:
        """Size of the last axis of the first output (the action vector)."""
        return int(self.outputs[0].shape[-1])

    @property
    def sampler(self) -> SamplerSpec | None:
        """The flow-matching sampling loop, either form (``flow_matching:`` or ``vla:``); None without one."""
        return self.flow_matching if self.flow_matching is not None else self.vla

    def sampler_graphs(self) -> tuple[PolicyManifest, PolicyManifest]:
        """The two graphs of a flow-matching model of either form, each as a plain single-graph manifest: (prefix
        encoder, denoising step) (:meth:`flow_encoder_manifest`, :meth:`flow_step_manifest` or
        :meth:`vla_prefix_manifest`, :meth:`vla_denoise_manifest`)."""
        if self.flow_matching is not None:
            return self.flow_encoder_manifest(), self.flow_step_manifest()
        return self.vla_prefix_manifest(), self.vla_denoise_manifest()

    def flow_encoder_manifest(self) -> PolicyManifest:
        """The prefix encoder of a flow-matching model alone: the model's inputs -> the context tensors."""
        fm = self._required(self.flow_matching, "flow_matching section")
        return dataclasses.replace(
            self,
            model_id=f"{self.model_id}/encoder",
            outputs=fm.context,
            normalization=self._normalization_of(self.inputs),
            torch=None,
            flow_matching=None,
            compression={},
        )

    def flow_step_manifest(self) -> PolicyManifest:
        """The denoising step of a flow-matching model alone: (noisy actions, tau, context) -> velocity. A batched
        model's ``tau`` is (B, 1), an unbatched one's (1,)."""
        fm = self._required(self.flow_matching, "flow_matching section")
        actions = self.outputs[0]
        x = TensorSpec(fm.noise_input, "float32", actions.shape)
        tau = TensorSpec(fm.time_input, "float32", (-1, 1) if len(actions.shape) == 3 else (1,))
        velocity = TensorSpec(fm.velocity_output, "float32", actions.shape)
        return self._graph("step", fm.step_graph, (x, tau, *fm.context), (velocity,), self.action_space)

    def _graph(
        self,
        part: str,
        onnx_path: Path,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        action_space: str,
        **fields: Any,
    ) -> PolicyManifest:
        """One graph of this model as a plain single-graph manifest, ``<model_id>/<part>`` (every engine serves it;
        the accuracy gates compare it): the model's providers, source, batching and action head; its horizon and
        ``dt_s`` unless ``fields`` (other :class:`PolicyManifest` fields) say otherwise."""
        fields = {"action_head": self.action_head, "horizon": self.horizon, "dt_s": self.dt_s, **fields}
        return PolicyManifest(
            model_id=f"{self.model_id}/{part}",
            onnx_path=onnx_path,
            inputs=inputs,
            outputs=outputs,
            action_space=action_space,
            providers=self.providers,
            source=self.source,
            max_batch=self.max_batch,
            **fields,
        )

    def _normalization_of(self, tensors: tuple[TensorSpec, ...]) -> dict[str, NormStats]:
        """The statistics of those of ``tensors`` the manifest normalises."""
        names = {t.name for t in tensors}
        return {k: v for k, v in self.normalization.items() if k in names}

    def _required(self, spec: _Spec | None, what: str) -> _Spec:
        if spec is None:
            raise ConfigError(f"manifest {self.source or self.model_id}: has no {what}")
        return spec

    def _check_instruction(self, where: str) -> None:
        """Validate the instruction input."""
        ins = self.instruction
        if ins is None:
            return
        spec = {t.name: t for t in self.inputs}.get(ins.input)
        if spec is None or spec.dtype != "int32" or len(spec.shape) != 2 or spec.shape[1] != ins.max_tokens:
            raise ConfigError(
                f"{where}: instruction.input {ins.input!r} must be an int32 input of shape [-1, {ins.max_tokens}] "
                f"(max_tokens); inputs: {[t.to_dict() for t in self.inputs]}"
            )
        if self.backbone is not None:
            raise ConfigError(f"{where}: an instruction input with a backbone is not supported")

    @property
    def request_inputs(self) -> tuple[TensorSpec, ...]:
        """What a client sends: the inputs (less the instruction, which the server fills from the request meta), or
        with a backbone its inputs plus the main model's inputs that the backbone does not produce (each name
        once)."""
        if self.backbone is None:
            skip = self.instruction.input if self.instruction is not None else None
            return tuple(t for t in self.inputs if t.name != skip)
        produced = {t.name for t in self.backbone.outputs}
        out = list(self.backbone.inputs)
        seen = {t.name for t in out}
        out += [t for t in self.inputs if t.name not in produced and t.name not in seen]
        return tuple(out)

    def vla_prefix_manifest(self) -> PolicyManifest:
        """The prefix encoder alone, as a plain single-graph manifest (every engine serves it; gates compare it)."""
        vla = self._required(self.vla, "vla section (not a VLA)")
        return self._graph(
            "prefix",
            self.onnx_path,
            vla.prefix_inputs,
            vla.prefix_outputs,
            "vla_prefix",
            horizon=1,
            torch=self.torch,
        )

    def vla_denoise_manifest(self) -> PolicyManifest:
        """One denoising step alone, as a plain single-graph manifest; the model inputs it takes (``state``) keep
        their normalisation."""
        vla = self._required(self.vla, "vla section (not a VLA)")
        return self._graph(
            "denoise",
            vla.denoise_onnx,
            vla.denoise_inputs,
            vla.denoise_outputs,
            "vla_velocity",
            normalization=self._normalization_of(vla.denoise_inputs),
            torch=vla.denoise_torch,
        )

    def backbone_manifest(self) -> PolicyManifest:
        """A manifest describing the backbone alone (for running it with an ONNX/TensorRT backend)."""
        bb = self._required(self.backbone, "backbone")
        return self._graph(
            "backbone",
            bb.onnx_path,
            bb.inputs,
            bb.outputs,
            "backbone_features",
            horizon=1,
            dt_s=1.0 / bb.rate_hz,
            normalization=bb.normalization,
        )

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path) -> PolicyManifest:
        """Load from a YAML file, or from an ``.onnx`` path (then ``<model>.yaml`` next to it is read)."""
        path = Path(path)
        if path.suffix == ".onnx":
            path = path.with_suffix(".yaml")
        data = read_yaml(path, "model manifest", missing="write a <model>.yaml next to the ONNX file")
        return cls.from_dict(data, base_dir=path.parent, source=path)

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | Path = ".", source: Path | None = None) -> PolicyManifest:
        """Build from a parsed YAML mapping; relative ``onnx`` paths are resolved against ``base_dir``."""
        where = f"manifest {source or '<dict>'}"
        check_keys(data, f"{where} (top level)", _KEYS_REQUIRED, _KEYS_OPTIONAL)
        onnx_path = _parse_path(data["onnx"], "onnx", base_dir, where)
        norm = _parse_norm(data.get("normalization", data.get("normalisation")) or {}, where)
        providers = data.get("providers", ["cpu"])
        if isinstance(providers, str):
            providers = [providers]
        if not isinstance(providers, list):
            raise ConfigError(f"{where}: providers must be a list such as [cuda, cpu]")
        compression = data.get("compression") or {}
        if not isinstance(compression, dict) or not all(isinstance(v, str) for v in compression.values()):
            raise ConfigError(f"{where}: compression must map request input name -> codec name, e.g. {{rgb: png}}")
        backbone = _parse_backbone(data.get("backbone"), base_dir, where)
        torch_spec = _parse_torch(data.get("torch"), base_dir, where)
        flow = _parse_flow(data.get("flow_matching"), base_dir, where)
        instruction = _parse_instruction(data.get("instruction"), base_dir, where)
        vla = _parse_vla(data.get("vla"), base_dir, where)
        return cls(
            model_id=str(data["model_id"]) if data["model_id"] is not None else "",
            onnx_path=onnx_path,
            inputs=_parse_tensors(data["inputs"], f"{where}: inputs"),
            outputs=_parse_tensors(data["outputs"], f"{where}: outputs"),
            action_space=data["action_space"],
            action_head=data["action_head"],
            horizon=data["horizon"],
            dt_s=data["dt_s"],
            control_rate_hz=data.get("control_rate_hz") or 0.0,
            normalization=norm,
            providers=tuple(str(p).lower() for p in providers),
            description=str(data.get("description", "")),
            source=source,
            max_batch=data.get("max_batch", 1),
            compression={str(k): v for k, v in compression.items()},
            backbone=backbone,
            torch=torch_spec,
            flow_matching=flow,
            instruction=instruction,
            vla=vla,
        )

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """A YAML-ready mapping; ``onnx`` is written relative to ``relative_to`` when given."""
        out: dict[str, Any] = {
            "model_id": self.model_id,
            "onnx": relative_path(self.onnx_path, relative_to),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "action_space": self.action_space,
            "action_head": self.action_head,
            "horizon": self.horizon,
            "dt_s": self.dt_s,
            "control_rate_hz": self.control_rate_hz,
            "providers": list(self.providers),
        }
        if self.normalization:
            out["normalization"] = {
                k: {"mean": v.mean.tolist(), "std": v.std.tolist()} for k, v in self.normalization.items()
            }
        if self.description:
            out["description"] = self.description
        if self.max_batch != 1:
            out["max_batch"] = self.max_batch
        if self.compression:
            out["compression"] = dict(self.compression)
        if self.backbone is not None:
            out["backbone"] = self.backbone.to_dict(relative_path(self.backbone.onnx_path, relative_to))
        if self.torch is not None:
            out["torch"] = {"program": relative_path(self.torch.program, relative_to)}
        if self.flow_matching is not None:
            out["flow_matching"] = self.flow_matching.to_dict(relative_to)
        if self.instruction is not None:
            out["instruction"] = self.instruction.to_dict(relative_path(self.instruction.tokenizer, relative_to))
        if self.vla is not None:
            out["vla"] = self.vla.to_dict(relative_to)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the manifest as YAML (``onnx`` relative to the YAML's folder); return the path."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(relative_to=path.parent), sort_keys=False))
        return path

    def summary(self) -> dict[str, Any]:
        """Msgpack-friendly description for the server's metadata reply (no file paths); ``request_inputs`` says
        what a client must send."""
        out = self.to_dict()
        out.pop("onnx")
        if "backbone" in out:
            out["backbone"].pop("onnx")
        out.pop("torch", None)
        if "flow_matching" in out:
            out["flow_matching"].pop("step_graph")
            out["flow_matching"].pop("seed", None)
        if "instruction" in out:
            out["instruction"].pop("tokenizer")
        if "vla" in out:
            out["vla"]["denoise"].pop("onnx")
            out["vla"]["denoise"].pop("torch", None)
        out["request_inputs"] = [t.to_dict() for t in self.request_inputs]
        return out


def _parse_norm(norm_raw: Any, where: str) -> dict[str, NormStats]:
    if not isinstance(norm_raw, dict):
        raise ConfigError(f"{where}: normalization must map tensor name -> {{mean, std}}")
    norm: dict[str, NormStats] = {}
    for name, stats in norm_raw.items():
        if not isinstance(stats, dict) or set(stats) != {"mean", "std"}:
            raise ConfigError(f"{where}: normalization.{name} must be a mapping with exactly mean and std")
        try:
            norm[str(name)] = NormStats(stats["mean"], stats["std"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: normalization.{name} mean/std must be numbers or lists: {exc}") from exc
    return norm


def _parse_path(raw: Any, name: str, base_dir: str | Path, where: str) -> Path:
    """The file of key ``name``: a non-empty string, relative to the manifest's folder (or absolute)."""
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{where}: {name} must be a path (relative to the manifest), got {raw!r}")
    return resolve_path(raw, base_dir)


def _parse_backbone(raw: Any, base_dir: str | Path, where: str) -> BackboneSpec | None:
    if raw is None:
        return None
    raw = check_keys(raw, f"{where}: backbone", *_BACKBONE_KEYS)
    onnx_path = _parse_path(raw["onnx"], "backbone.onnx", base_dir, where)
    inputs = _parse_tensors(raw["inputs"], f"{where}: backbone.inputs")
    outputs = _parse_tensors(raw["outputs"], f"{where}: backbone.outputs")
    norm = _parse_norm(raw.get("normalization") or {}, f"{where}: backbone")
    specs = {t.name: t for t in inputs + outputs}
    for name in norm:
        if name not in specs or not specs[name].dtype.startswith("float"):
            raise ConfigError(f"{where}: backbone normalization for {name!r}, which is not a float backbone tensor")
    return BackboneSpec(onnx_path, inputs, outputs, raw["rate_hz"], norm)


def _parse_torch(raw: Any, base_dir: str | Path, where: str) -> TorchSpec | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or set(raw) != {"program"}
        or not isinstance(raw["program"], str)
        or not raw["program"]
    ):
        raise ConfigError(f"{where}: torch must be a mapping with exactly one key, program: <file> (.pt2 or .pt)")
    if Path(raw["program"]).suffix not in TORCH_FORMATS:
        raise ConfigError(
            f"{where}: torch.program {raw['program']!r} has an unknown suffix; use .pt2 (torch.export) or "
            f".pt/.ts (TorchScript)"
        )
    return TorchSpec(resolve_path(raw["program"], base_dir))


def _parse_flow(raw: Any, base_dir: str | Path, where: str) -> FlowMatchingSpec | None:
    if raw is None:
        return None
    raw, loop = FlowMatchingSpec._read_section(raw, where)
    defaults = (("noise_input", "x_t"), ("time_input", "tau"), ("velocity_output", "velocity"))
    names = {k: raw.get(k, d) for k, d in defaults}
    if not all(isinstance(v, str) and v for v in names.values()):
        raise ConfigError(f"{where}: flow_matching tensor names must be non-empty strings, got {names}")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{where}: flow_matching.seed must be an integer or null, got {seed!r}")
    return FlowMatchingSpec(
        **loop,
        step_graph=_parse_path(raw["step_graph"], "flow_matching.step_graph", base_dir, where),
        context=_parse_tensors(raw["context"], f"{where}: flow_matching.context"),
        seed=seed,
        **names,
    )


def _parse_instruction(raw: Any, base_dir: str | Path, where: str) -> InstructionSpec | None:
    if raw is None:
        return None
    keys = {"input", "tokenizer", "max_tokens", "meta_key"}
    if not isinstance(raw, dict) or not {"input", "tokenizer", "max_tokens"} <= set(raw) or set(raw) - keys:
        raise ConfigError(
            f"{where}: instruction must be a mapping with input, tokenizer, max_tokens (and optionally meta_key)"
        )
    max_tokens = raw["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 512:
        raise ConfigError(f"{where}: instruction.max_tokens must be an int in 1..512, got {max_tokens!r}")
    for key in ("input", "tokenizer", "meta_key"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise ConfigError(f"{where}: instruction.{key} must be a non-empty string")
    tokenizer = resolve_path(raw["tokenizer"], base_dir)
    return InstructionSpec(raw["input"], tokenizer, max_tokens, raw.get("meta_key", "task"))


def _parse_vla(raw: Any, base_dir: str | Path, where: str) -> VlaSpec | None:
    if raw is None:
        return None
    raw, loop = VlaSpec._read_section(raw, where)
    denoise = check_keys(raw["denoise"], f"{where}: vla.denoise", *_VLA_DENOISE_KEYS)
    return VlaSpec(
        **loop,
        prefix_inputs=_parse_tensors(raw["prefix_inputs"], f"{where}: vla.prefix_inputs"),
        prefix_outputs=_parse_tensors(raw["prefix_outputs"], f"{where}: vla.prefix_outputs"),
        denoise_onnx=_parse_path(denoise["onnx"], "vla.denoise.onnx", base_dir, where),
        denoise_inputs=_parse_tensors(denoise["inputs"], f"{where}: vla.denoise.inputs"),
        denoise_outputs=_parse_tensors(denoise["outputs"], f"{where}: vla.denoise.outputs"),
        denoise_torch=_parse_torch(denoise.get("torch"), base_dir, f"{where}: vla.denoise"),
    )


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _parse_tensors(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of {{name, dtype, shape}} mappings")
    out: list[TensorSpec] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not {"name", "dtype", "shape"} <= set(entry):
            raise ConfigError(f"{where}[{i}]: expected a mapping with name, dtype and shape, got {entry!r}")
        extra = set(entry) - {"name", "dtype", "shape", "allow_nonfinite"}
        if extra:
            raise ConfigError(f"{where}[{i}]: unknown key(s) {sorted(extra)}")
        name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}[{i}]: name must be a non-empty string")
        if dtype not in TENSOR_DTYPES:
            raise ConfigError(f"{where}[{i}] ({name}): dtype {dtype!r} not supported; use one of {TENSOR_DTYPES}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d >= 0) for d in shape
        ):
            raise ConfigError(
                f"{where}[{i}] ({name}): shape must be a list of ints >= 0 or -1 (dynamic), got {shape!r}"
            )
        out.append(TensorSpec(name, dtype, tuple(shape), bool(entry.get("allow_nonfinite", False))))
    return tuple(out)
