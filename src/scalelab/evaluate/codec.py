"""From text to a model's token ids and back, for scoring prompt/answer pairs with any tokenizer.

    CHARS               the task labs' character-level vocabulary (`scalelab.data.chars.encode_chars`)
    TokenizerCodec      a run's own tokenizer (the byte-level BPE of `scalelab.data.tokenizer`, or any
                        `tokenizers.Tokenizer`)

A problem is scored as it appears in training text: preceded by a newline, its answer followed by one.
`Codec.pair` splits the ids of the whole line at the context's end, as lm-evaluation-harness does
(its `_encode_pair`): the context is encoded alone, the continuation is the rest of the whole line's
encoding, so the answer is scored in the tokenization the model was trained on. Where a merge crosses
the boundary (the context's ids are not a prefix of the whole's), the answer is encoded apart.
Answers end at a newline, so generation stops at the first token whose text holds one.
"""

from __future__ import annotations

from functools import cached_property

from scalelab.data.chars import ALPHABET, decode_chars, encode_chars


class Codec:
    """Text <-> ids. Subclasses define `encode`, `decode` and `vocab_size`."""

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def context(self, prompt: str) -> list[int]:
        """The ids a model reads before answering: a newline (the previous line's end), then the prompt."""
        return self.encode("\n" + prompt)

    def pair(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """(context ids, answer ids): the answer's ids include the newline that ends it."""
        ctx = self.context(prompt)
        whole = self.encode("\n" + prompt + answer + "\n")
        if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx):]
        return ctx, self.encode(answer + "\n")

    @cached_property
    def stop_ids(self) -> frozenset[int]:
        """Ids whose text holds a newline: generating one ends the answer."""
        return frozenset(i for i in range(self.vocab_size) if "\n" in self.decode([i]))


class CharCodec(Codec):
    vocab_size = len(ALPHABET) + 1

    def encode(self, text: str) -> list[int]:
        return encode_chars(text)

    def decode(self, ids) -> str:
        return decode_chars(ids)


class TokenizerCodec(Codec):
    """A `tokenizers.Tokenizer` (e.g. `TokenDataset.tokenizer()`, or `load_run`'s third value)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)


CHARS = CharCodec()
