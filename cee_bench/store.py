"""The model store: each trained model's weights (safetensors) and the config that rebuilds it, one folder per
(task, method, seed) under `<output_dir>/models/`.

Why: a record's numbers can then be re-derived from the very weights that produced them (the multi-process test
recomputes the dev decisions of a two-process model in one process), and a later run can reuse a trained model.
A method that trains one model per grid value (ConsistentEE's α) stores one weights file per value.

Every file is written atomically through `results.atomic_write`, the config last: a folder whose config exists is
complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from cee_bench.errors import UserError
from cee_bench.multiexit import MultiExitModel
from cee_bench.results import atomic_write

CONFIG = "config.json"
SINGLE = "model"  # the variant name of a method's only model


def model_dir(output_dir: Path, task: str, method: str, seed: int) -> Path:
    """Where the models of one (task, method, seed) live (beside `results.result_path`'s records)."""
    return Path(output_dir) / "models" / task / f"{method}__seed{seed}"


def variant_name(threshold_name: str, value: Any) -> str:
    """The store's name for the model trained for grid value `value` (e.g. `alpha=0.02`)."""
    return f"{threshold_name}={value:g}" if isinstance(value, (int, float)) else f"{threshold_name}={value}"


def save_models(output_dir: Path, *, task: str, method: str, seed: int, pooling: str, backbone: nn.Module,
                models: dict[str, MultiExitModel]) -> dict[str, Any]:
    """Store `models` ({variant name: model}) with what `load_model` needs to rebuild them; returns the record's
    `model_store` entry (folder relative to `output_dir`, and the file of each variant)."""
    from safetensors.torch import save_model

    folder = model_dir(output_dir, task, method, seed)
    files = {}
    for name, model in models.items():
        files[name] = f"{name}.safetensors"
        # save_model, not save_file: a shared pooler is one tensor under two names, which save_file refuses
        atomic_write(folder / files[name], lambda tmp, m=model: save_model(m, str(tmp)))
    config = {"task": task, "method": method, "seed": seed, "pooling": pooling,
              "backbone_config": backbone.config.to_dict(), "files": files}
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    return {"path": str(folder.relative_to(output_dir)), "files": files}


def load_model(folder: Path, variant: str = SINGLE) -> MultiExitModel:
    """The stored model `variant` of `folder`, rebuilt from its config (no pretrained download) in eval mode."""
    from safetensors.torch import load_model as load_weights
    from transformers import AutoConfig, AutoModel

    from cee_bench.method import get_method
    from cee_bench.runner import build_model
    from cee_bench.tasks import get_task

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"not a model-store folder: {folder} ({exc})") from None
    if variant not in config["files"]:
        raise UserError(f"no model '{variant}' in {folder}; stored: {', '.join(config['files'])}")
    backbone_config = dict(config["backbone_config"])
    encoder = AutoModel.from_config(AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config))
    model = build_model(get_method(config["method"]), encoder, get_task(config["task"]), config["pooling"],
                        config["seed"])
    load_weights(model, str(folder / config["files"][variant]))
    return model.eval()
