"""Byte-level BPE tokenizer trained locally with Hugging Face `tokenizers`, cached by content hash, or
an existing one (`data.tokenizer`: a `tokenizer.json` of GPT-NeoX, Llama 3, ...).

Byte-level means any UTF-8 text round-trips exactly (no unknown token). The special token
``<|endoftext|>`` (id 0) separates documents in the token stream; an existing tokenizer's own
end-of-text token does (the first of `END_OF_TEXT` it has).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from scalelab.errors import UserError

EOT = "<|endoftext|>"
# end-of-text tokens of common tokenizers: GPT-2 / GPT-NeoX / Qwen, Llama 3, Llama 2 / Mistral, Gemma
END_OF_TEXT = (EOT, "<|end_of_text|>", "</s>", "<eos>")


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE of ``vocab_size`` tokens (a `tokenizers.Tokenizer`), ``<|endoftext|>`` first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # the [train] extra

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def tokenizer_file(path: str | Path) -> Path:
    """``path`` if it is a file, else its ``tokenizer.json``; a UserError naming `data.tokenizer` if absent."""
    p = Path(path).expanduser()
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"data.tokenizer: {path} is not a tokenizer.json (nor a folder holding one)")
    return f


def end_of_text(tok) -> tuple[str, int]:
    """(token, id) that ends a text: the first of `END_OF_TEXT` in the vocabulary."""
    for t in END_OF_TEXT:
        i = tok.token_to_id(t)
        if i is not None:
            return t, i
    raise UserError(f"the tokenizer has none of the end-of-text tokens {', '.join(END_OF_TEXT)}: documents "
                    "could not be separated nor generation stopped; add one to it")


def save_atomic(tok, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)
