"""Classification's entries in the model store (`cee_bench.store`, which keeps them whole and verified): a
`MultiExitModel`'s weights and the config that rebuilds it (`cee_bench.classification.sharing` computes the keys and
decides what is reused).

Why: a record's numbers can be re-derived from the very weights that produced them (the multi-process test
recomputes the dev decisions of a two-process model in one process), and a later run — another grid, more latency
examples, another device, an interrupted run — reuses a trained model instead of training it again. A record names
its models in `model_store` ({variant: key} under `path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.errors import UserError
from cee_bench.precision import DEFAULT_DTYPE
from cee_bench.store import WEIGHTS, check_entry, write_entry

SINGLE = "model"  # the variant name of a method's only model


def variant_name(threshold_name: str, value: Any) -> str:
    """The name of the model trained for grid value `value` (e.g. `alpha_depth=0.1`)."""
    return f"{threshold_name}={value:g}" if isinstance(value, (int, float)) else f"{threshold_name}={value}"


def save_entry(folder: Path, model: MultiExitModel, *, task: str, method: str, seed: int, pooling: str,
               backbone: nn.Module, extra: dict[str, Any]) -> None:
    """Store `model` (in the layout of `method`) whole at `folder`, with what `load_model` needs to rebuild it, plus
    `extra` (the training's identity, its log and steps). The caller holds the key's lock (`ModelStore.claim`)."""
    from safetensors.torch import save_model

    # save_model, not save_file: a shared pooler is one tensor under two names, which save_file refuses
    write_entry(folder, lambda path: save_model(model, str(path)),
                {**extra, "task": task, "method": method, "seed": seed, "pooling": pooling,
                 "precision": model.precision, "backbone_config": backbone.config.to_dict()})


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
    config, problem = check_entry(folder)
    if config is None:
        raise UserError(f"not a model-store entry: {folder}" + (f" ({problem})" if problem else ""))
    backbone_config = dict(config["backbone_config"])
    encoder = AutoModel.from_config(AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config))
    model = build_model(get_method(config["method"]), encoder, get_task(config["task"]), config["pooling"],
                        config["seed"], config.get("precision", DEFAULT_DTYPE))
    return load_weights(folder, model).eval()
