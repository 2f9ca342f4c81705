"""A small ladder trained with the Hugging Face Trainer (not scalelab), for `scalelab ladder import`.

Five Llama models (hidden 32-128) at two step counts learn the bytes of Python's own standard-library
sources, each a separate Trainer run with TensorBoard logging, evaluation every 10 steps and token counting:

    python examples/hf_trainer_ladder.py --out hf-ladder                  # ~1 minute on 2 CPU cores
    scalelab ladder import hf-ladder --source tensorboard --out imported  # N from each run's config.json
    scalelab report imported --fit                                       # the fit and the report
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

SEQ, VOCAB = 64, 256


def byte_blocks(n_bytes: int, offset: int = 0) -> torch.Tensor:
    """(blocks, SEQ) byte ids of the standard library's .py files, concatenated in a fixed order."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    data = b"".join(f.read_bytes() for f in files)[offset:offset + n_bytes]
    ids = torch.tensor(list(data), dtype=torch.long)
    return ids[: len(ids) // SEQ * SEQ].view(-1, SEQ)


class Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def train_one(out: Path, hidden: int, steps: int, seed: int = 0) -> None:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                      num_attention_heads=max(1, hidden // 32), num_key_value_heads=max(1, hidden // 32),
                      max_position_embeddings=SEQ, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=3e-3,
                             lr_scheduler_type="cosine", warmup_steps=steps // 10, logging_steps=5,
                             eval_strategy="steps", eval_steps=10, save_strategy="no", report_to=["tensorboard"],
                             include_num_input_tokens_seen=True, use_cpu=True, seed=seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Blocks(byte_blocks(8 * SEQ * steps)),
                      eval_dataset=Blocks(byte_blocks(16 * SEQ, offset=4_000_000)))
    trainer.train()
    trainer.save_state()  # trainer_state.json: the log history
    model.config.save_pretrained(out)  # config.json: what N is counted from


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", default="60,120", help="step counts (comma-separated)")
    p.add_argument("--hidden", default="32,48,64,96,128", help="widths (comma-separated)")
    a = p.parse_args()
    for steps in map(int, a.steps.split(",")):
        for h in map(int, a.hidden.split(",")):
            train_one(Path(a.out) / f"llama-h{h}-s{steps}", h, steps)


if __name__ == "__main__":
    main()
