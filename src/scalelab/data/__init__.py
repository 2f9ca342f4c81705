"""Data: corpora (offline default + local files + Hugging Face datasets), BPE tokenizer, token shards."""
