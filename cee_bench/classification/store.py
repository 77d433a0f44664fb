"""The model store: trained weights (safetensors) and the config that rebuilds them, one folder per training key under
`<output_dir>/models/<task>/<key>/` (`cee_bench.classification.sharing` computes the keys and decides what is reused).

Why: a record's numbers can be re-derived from the very weights that produced them (the multi-process test
recomputes the dev decisions of a two-process model in one process), and a later run — another grid, more latency
examples, another device, an interrupted run — reuses a trained model instead of training it again. A record names
its models in `model_store` ({variant: key} under `path`). The store is a cache: deleting it only means retraining.

Every file is written atomically through `results.atomic_write`, the config last: a folder whose config exists is
complete; dropping an entry removes the config first, for the same reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.errors import UserError
from cee_bench.precision import DEFAULT_DTYPE
from cee_bench.results import atomic_write, write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SINGLE = "model"  # the variant name of a method's only model


def store_root(output_dir: Path, task: str) -> Path:
    """The folder of one task's entries (beside `results.result_path`'s records)."""
    return Path(output_dir) / "models" / task


def variant_name(threshold_name: str, value: Any) -> str:
    """The name of the model trained for grid value `value` (e.g. `alpha_depth=0.1`)."""
    return f"{threshold_name}={value:g}" if isinstance(value, (int, float)) else f"{threshold_name}={value}"


def save_entry(folder: Path, model: MultiExitModel, *, task: str, method: str, seed: int, pooling: str,
               backbone: nn.Module, extra: dict[str, Any]) -> None:
    """Store `model` (in the layout of `method`) with what `load_model` needs to rebuild it, plus `extra` (the
    training's identity, its log and steps)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    # save_model, not save_file: a shared pooler is one tensor under two names, which save_file refuses
    atomic_write(folder / WEIGHTS, lambda tmp: save_model(model, str(tmp)))
    write_json(folder / CONFIG, {**extra, "task": task, "method": method, "seed": seed, "pooling": pooling,
                                 "precision": model.precision, "backbone_config": backbone.config.to_dict(),
                                 "weights": WEIGHTS})


def read_entry(folder: Path) -> dict[str, Any] | None:
    """The config of a complete entry; None when there is none (or it cannot be read: the store is a cache)."""
    try:
        config = json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) and (Path(folder) / WEIGHTS).is_file() else None


def drop_entry(folder: Path) -> None:
    """Remove an entry (config first, so a half-removed entry reads as absent)."""
    folder = Path(folder)
    for name in (CONFIG, WEIGHTS):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def load_weights(folder: Path, model: MultiExitModel) -> MultiExitModel:
    """Load the entry's weights into `model` (built in the entry's layout) in place."""
    from safetensors.torch import load_model as load_into

    load_into(model, str(Path(folder) / WEIGHTS), device=str(model.device))
    return model


def load_model(folder: Path) -> MultiExitModel:
    """The stored model of entry `folder`, rebuilt from its config (no pretrained download) in eval mode."""
    from transformers import AutoConfig, AutoModel

    from cee_bench.classification.method import build_model
    from cee_bench.registry import get_method
    from cee_bench.tasks import get_task

    folder = Path(folder)
    config = read_entry(folder)
    if config is None:
        raise UserError(f"not a model-store entry: {folder}")
    backbone_config = dict(config["backbone_config"])
    encoder = AutoModel.from_config(AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config))
    model = build_model(get_method(config["method"]), encoder, get_task(config["task"]), config["pooling"],
                        config["seed"], config.get("precision", DEFAULT_DTYPE))
    return load_weights(folder, model).eval()
