"""A run's tokenized dataset, from its `DataConfig` and vocabulary size."""

from __future__ import annotations

from scalelab.config import RunConfig
from scalelab.data.shards import DataSpec, TokenDataset, build_dataset
from scalelab.errors import UserError


def data_spec(cfg: RunConfig) -> DataSpec:
    d, t = cfg.data, cfg.tasks
    mixed = dict(tasks=t.names, task_fraction=t.train_fraction, task_heldout=t.eval_problems) \
        if t.train_fraction > 0 else {}
    return DataSpec(corpus=d.corpus, vocab_size=cfg.model.vocab_size, text_field=d.text_field,
                    hf_split=d.hf_split, hf_data_files=d.hf_data_files, hf_revision=d.hf_revision,
                    max_bytes=d.max_bytes,
                    tokenizer_train_bytes=d.tokenizer_train_bytes, val_fraction=d.val_fraction,
                    shard_tokens=d.shard_tokens, tokenizer=d.tokenizer, id_field=d.id_field, **mixed)


def load_dataset(cfg: RunConfig, log=print) -> TokenDataset:
    ds = TokenDataset(build_dataset(data_spec(cfg), log=log))
    if ds.vocab_size > cfg.model.vocab_size:
        raise UserError(f"the tokenizer has {ds.vocab_size} tokens but model.vocab_size={cfg.model.vocab_size}; "
                        "raise model.vocab_size")
    return ds
