"""Where `scalelab count` finds a model: a shipped name (model/zoo), a Hugging Face config.json, a
scalelab run config or a run directory; -> the analytic `Arch`, or transformers' meta-device counts
for a model_type without an analytic reader (totals only, and it says which figures are missing)."""

from __future__ import annotations

from pathlib import Path

from scalelab import config as run_config
from scalelab.errors import UserError
from scalelab.io import read_config_file
from scalelab.model import hf_meta, zoo
from scalelab.model.arch import Arch
from scalelab.model.hf_arch import READERS, arch_from_hf, text_config
from scalelab.train.rundir import RunDir


def read_source(source: str) -> dict:
    """The config dict behind ``source``: a file, a run directory, or a shipped model's name."""
    p = Path(source)
    if p.is_dir():  # a run directory, or an exported Hugging Face folder: config.json either way
        return read_config_file(RunDir(p).config_file)
    if p.exists() or p.suffix in (".json", ".toml"):
        return read_config_file(p)
    return zoo.load(source)


def is_hf(d: dict) -> bool:
    return "model_type" in d or "architectures" in d


def model_counts(source: str, seq_len: int | None = None) -> tuple[Arch | None, dict]:
    """(the Arch, or None when only transformers could count it; every count `scalelab count` prints)."""
    return config_counts(read_source(source), seq_len, name=str(source))


def config_counts(d: dict, seq_len: int | None = None, name: str = "") -> tuple[Arch | None, dict]:
    """`model_counts` of a config already read: a Hugging Face config.json or a scalelab run config."""
    if not is_hf(d):
        arch = run_config.load_dict(d).model.arch()
        return arch, arch.counts(seq_len)
    if text_config(d)[0].get("model_type") not in READERS:
        counts = hf_meta.meta_counts(d)
        counts["notes"] = [f"model_type={d.get('model_type')!r} has no analytic reader: totals from "
                           f"{counts.pop('source')}; not derived: {', '.join(counts.pop('not_derived'))}"]
        return None, counts
    arch = arch_from_hf(d)
    counts = arch.counts(seq_len)
    if isinstance(d.get("text_config"), dict):
        counts.update(_towers(d, arch, zoo.OTHER_TOWERS.get(name.lower())))
    return arch, counts


def _towers(d: dict, arch: Arch, known: int | None = None) -> dict:
    """A multimodal model's other towers (vision encoder, projector): a shipped model's recorded count, else
    counted by transformers on the meta device (if installed; slow: it imports torch)."""
    if known is None:
        try:
            known = hf_meta.meta_counts(d)["num_params_total"] - arch.num_params_total
        except UserError as e:
            return {"other_towers": f"not counted ({e})"}
    return {"num_params_other_towers": known, "num_params_with_other_towers": arch.num_params_total + known}
