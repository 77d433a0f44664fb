"""Generation's trainings in the model store (`cee_bench.store`), reused by training key like classification's
(`cee_bench.classification.sharing`): the anytime exit adapters (ConsistentEE-LLM's stage 1, which the `*-anytime`
CALM variants share), CALM's meta-classifier, and per α ConsistentEE's policy with its stage-3 adapters. So neither a
sweep's jobs nor a rerun with another grid or another method list train them again.

A key is the sha256 of what decides a part's weights: the code (its fingerprint, as classification's keys), the
backbone's weights (its provenance without the local path: package, revision, commit, sha256 of its files), the
training text (a digest of its prompts and targets), its length limits, the exit layers, the seed, and the part's
own settings. A part is found, trained and stored under its
key's lock (`ModelStore.claim`), so two jobs that need one part train it once. An entry keeps, beside the weights,
what the record says about the training (`notes`), so a record is the same whether its parts were trained or loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from torch import nn

from cee_bench.generation.tasks import PromptExample
from cee_bench.presets import GenerationPreset
from cee_bench.progress import Progress
from cee_bench.provenance import code_identity
from cee_bench.store import ModelStore, canonical, training_key

_BACKBONE_IDENTITY = ("name", "package", "revision", "commit_hash", "weights_sha256")


class GenerationStore:
    """One generation run's view of the store: `obtain` gives modules the weights of a part, loaded or trained, and
    fills `training` (per method: what it reused, what it trained)."""

    def __init__(self, output_dir: Path, task: str, *, model: dict[str, Any], train: list[PromptExample],
                 preset: GenerationPreset, exit_layers: tuple[int, ...], seed: int, progress: Progress) -> None:
        self.store = ModelStore(output_dir, task, log=progress.log, warn=progress.warn)
        self.progress, self.task = progress, task
        text = json.dumps([[e.prompt, e.target] for e in train], separators=(",", ":"))
        self.base = {"code": code_identity()["fingerprint"], "kind": "generation", "task": task,
                     "backbone": {k: model.get(k) for k in _BACKBONE_IDENTITY}, "exit_layers": list(exit_layers),
                     "seed": seed, "train": hashlib.sha256(text.encode()).hexdigest(), "cutoff": preset.cutoff,
                     "train_tokens": preset.train_tokens}
        self.method = ""
        self.training: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def block(self, method: str) -> dict[str, Any]:
        """The record's `training` block of `method`: the parts it loaded and those it trained."""
        return {"store": "reuse", **self.training.get(method, {"reused_from": [], "trained": []})}

    def obtain(self, part: str, settings: dict[str, Any], modules: dict[str, nn.Module],
               train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Give `modules` (built, in their initial state) the weights of `part` trained with `settings`: loaded when
        stored, else trained by `train()`, which returns what the record notes about it, and stored. Returns those
        notes."""
        from safetensors.torch import load_file, save_file

        identity = {**self.base, "part": part, "settings": settings}
        key = training_key(identity)
        events = self.training.setdefault(self.method, {"reused_from": [], "trained": []})
        with self.store.claim(key):
            entry = self.store.find(key, identity)
            if entry is not None:
                tensors = load_file(str(self.store.folder(key) / "model.safetensors"))
                for name, module in modules.items():
                    module.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items()
                                            if k.startswith(f"{name}.")})
                events["reused_from"].append({"part": part, "recipe": key, "entry": self.store.relative(key),
                                              **entry["trained_by"]})
                self.progress.log(f"  {part}: reused training {key} (trained by {entry['trained_by']['method']})")
                return entry["notes"]
            notes = canonical(train())
            tensors = {f"{name}.{k}": v.detach().contiguous() for name, module in modules.items()
                       for k, v in module.state_dict().items()}
            self.store.save(key, lambda path: save_file(tensors, str(path)),
                            {"key": key, "identity": canonical(identity), "notes": notes,
                             "trained_by": {"method": self.method}})
        events["trained"].append({"part": part, "recipe": key})
        return notes
