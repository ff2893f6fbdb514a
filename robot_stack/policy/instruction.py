"""The instruction input of a language-conditioned model: the server tokenizes the text the robot sends.

A manifest that declares ``instruction`` (:class:`InstructionSpec`) names one of its inputs as the instruction: an
int32 ``(-1, max_tokens)`` tensor of token ids. The robot does not send it; it sends the text in the request meta
(``meta["task"]`` by default, what :class:`~robot_stack.cycle.PolicyCycle` puts there), and the server fills the
input with :class:`InstructionTokenizer` — a `tokenizers <https://github.com/huggingface/tokenizers>`_ tokenizer
whose vocabulary the model's trainer built and saved next to the model (``tokenizer.json``): lower-cased, split on
whitespace and punctuation, padded with id 0 (``[PAD]``) to ``max_tokens``; words outside the vocabulary become
``[UNK]`` (and are logged once).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError, PolicyError

__all__ = ["PAD_TOKEN", "UNK_TOKEN", "InstructionSpec", "InstructionTokenizer"]

log = logging.getLogger("robot_stack.policy.instruction")

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
#: Longest instruction accepted (characters): a request cannot make the server tokenize megabytes.
MAX_TEXT_CHARS = 1000


@dataclass(frozen=True)
class InstructionSpec:
    """Where a manifest's instruction comes from and goes to.

    Attributes:
        input: the model input filled with token ids (int32, shape ``(-1, max_tokens)``).
        tokenizer: absolute path of the ``tokenizers`` JSON file.
        max_tokens: ids per instruction (padded with 0).
        meta_key: request meta key holding the text.
    """

    input: str
    tokenizer: Path
    max_tokens: int
    meta_key: str = "task"

    def to_dict(self, tokenizer: str) -> dict[str, Any]:
        return {"input": self.input, "tokenizer": tokenizer, "max_tokens": self.max_tokens, "meta_key": self.meta_key}


class InstructionTokenizer:
    """Text -> fixed-length int32 token ids, with the model's own vocabulary.

    Args:
        spec: the manifest's instruction section.

    Raises:
        ConfigError: the tokenizer file is missing or unreadable, or lacks ``[PAD]`` = 0 / ``[UNK]``.
    """

    def __init__(self, spec: InstructionSpec) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ConfigError(
                f"the tokenizers package is needed for instructions ({exc}); pip install tokenizers"
            ) from exc
        if not spec.tokenizer.is_file():
            raise ConfigError(f"instruction tokenizer {spec.tokenizer} not found; it is saved next to the model")
        try:
            self._tok = Tokenizer.from_file(str(spec.tokenizer))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ConfigError(f"cannot read the instruction tokenizer {spec.tokenizer}: {exc}") from exc
        if self._tok.token_to_id(PAD_TOKEN) != 0 or self._tok.token_to_id(UNK_TOKEN) is None:
            raise ConfigError(f"tokenizer {spec.tokenizer}: needs {PAD_TOKEN} = id 0 and an {UNK_TOKEN} token")
        self.spec = spec
        self.unk_id = int(self._tok.token_to_id(UNK_TOKEN))
        self.vocab_size = int(self._tok.get_vocab_size())
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, text: Any) -> np.ndarray:
        """(max_tokens,) int32 ids of ``text`` (read-only; cached per text).

        Raises:
            PolicyError: ``text`` is not a non-empty string, is too long, or has more tokens than the model takes.
        """
        if not isinstance(text, str) or not text.strip():
            raise PolicyError(
                f"this model needs an instruction: send it as a non-empty string in the request meta "
                f'{self.spec.meta_key!r} (robot-stack ... --task "..."), got {text!r}'
            )
        if len(text) > MAX_TEXT_CHARS:
            raise PolicyError(f"instruction of {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted")
        with self._lock:
            cached = self._cache.get(text)
        if cached is not None:
            return cached
        ids = self._tok.encode(text).ids
        if len(ids) > self.spec.max_tokens:
            raise PolicyError(
                f"instruction {text!r} has {len(ids)} tokens; this model takes at most {self.spec.max_tokens}"
            )
        if self.unk_id in ids and text not in self._warned:
            self._warned.add(text)
            log.warning("instruction %r has words outside the model's vocabulary (encoded as %s)", text, UNK_TOKEN)
        out = np.zeros(self.spec.max_tokens, np.int32)
        out[: len(ids)] = ids
        out.setflags(write=False)
        with self._lock:
            if len(self._cache) < 256:
                self._cache[text] = out
        return out

    def encode_rows(self, text: Any, rows: int) -> np.ndarray:
        """(rows, max_tokens) int32: the ids of ``text`` for every row of a request's batch."""
        return np.broadcast_to(self.encode(text), (rows, self.spec.max_tokens)).copy()
