"""The VLA's instruction vocabulary, built by the project with the ``tokenizers`` library.

A word-level tokenizer (normaliser: NFKC, lower case, punctuation removed; whitespace pre-tokenizer) whose vocabulary is
trained on the instruction corpus (:data:`CORPUS`: the tabletop suite's instructions and the words an operator may
use about its objects), with ``[PAD]`` = 0 and ``[UNK]``. It is saved as ``<model_id>.tokenizer.json`` next to the
model; the server loads it (:class:`robot_stack.policy.instruction.InstructionTokenizer`) to tokenize the text the
robot sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from robot_stack.policy.instruction import PAD_TOKEN, UNK_TOKEN
from robot_stack.sim.tabletop import INSTRUCTIONS

__all__ = ["CORPUS", "build_tokenizer"]

#: What the vocabulary is trained on: the suite's instructions plus the other colours, shapes and directions of the
#: cell (so that an instruction about them is tokenized, not reduced to [UNK]).
CORPUS: tuple[str, ...] = (
    *(i.text for i in INSTRUCTIONS),
    "touch the yellow sphere",
    "push the red cube to the right",
    "touch the object farthest from the robot",
    "reach and touch the red cube",
    "move the blue block forward",
)


def build_tokenizer(corpus: Iterable[str] = CORPUS, path: str | Path | None = None):  # type: ignore[no-untyped-def]
    """Train a word-level ``tokenizers.Tokenizer`` on ``corpus`` (``[PAD]`` = 0, ``[UNK]`` = 1); save it to
    ``path`` when given. Returns the tokenizer."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[\p{P}]"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    trainer = WordLevelTrainer(special_tokens=[PAD_TOKEN, UNK_TOKEN], min_frequency=1, show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    if path is not None:
        tok.save(str(path))
    return tok
