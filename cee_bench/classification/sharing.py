"""One training per distinct training key: `MethodTrainer` trains a method's stages, shares them across methods and
keeps them in the model store (`cee_bench.store`, with `cee_bench.classification.store` for the models' layout).

A training key names what decides a set of trained weights: the code (`provenance.code_identity`'s fingerprint), the
method whose heads and loss train them, the stage settings, the stages before it (`parents`), the backbone's weights,
the training and held-out rows (as tokenised), pooling and seed. The key is a hash of that identity as canonical JSON (`training_key`), so two methods whose stages
train the same thing (DeeBERT's stage 1 is `full`'s training, PCEE-BERT's and ConsistentEE's step 1 are PABEE's) get
the same key and the second one loads what the first one trained — within one `run --methods all` and across runs.
Methods declare this (`Method.shares`, `Method.adopt`, `Method.resumes_rounds`); this module owns the loop:

- each stage named in `shares` is trained (or loaded) in the layout of the method it names, then adopted;
- the remaining stages are one training too: loaded when stored, else trained by `fit` and stored;
- a method that trains in rounds (ConsistentEE) checkpoints each finished round through `StoreCheckpoints`, so an
  interrupted run resumes at the round it was in, and each α is its own training (another `--grid` reuses the α
  values it shares with the stored ones).
- a key is found, trained and stored under its lock (`MethodTrainer.claim`), so a second process that needs the same
  key (another `cee-bench run` on the same folder, a job of a sweep) waits and then loads it: one training per key.

The device and the number of processes are not part of a key: a run on another device re-evaluates and re-times the
stored weights (the entry says where they were trained). `retrain` reuses only entries written by this run. A stored
entry whose identity differs from the requested one is never reused, whatever its folder name. The store is a cache:
deleting it means retraining, nothing else. Every record says what it reused and what it trained (`training`; its
entries name the key under `recipe`, the record's original word for it).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager

import torch

from cee_bench import distributed
from cee_bench.classification.data import Encoded
from cee_bench.classification.fit import Checkpoints, FitContext
from cee_bench.classification.method import Method, build_model, resolve_stages
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.classification.store import SINGLE, load_weights, save_entry
from cee_bench.progress import Progress
from cee_bench.provenance import code_identity
from cee_bench.registry import get_method
from cee_bench.results import result_path
from cee_bench.store import ModelStore, canonical, training_key
from cee_bench.tasks import Task
from cee_bench.training import Stage

if TYPE_CHECKING:
    from cee_bench.options import RunOptions



@dataclass
class Trained:
    """What `MethodTrainer` hands back to `ClassificationRecipe.run_method`: the model (or one per grid value), the
    log and meta of every stage, the record's `model_store` entry (None with the store off) and its `training` block."""

    model: MultiExitModel
    variants: dict[Any, MultiExitModel]
    log: dict[str, Any]
    meta: dict[str, Any]
    model_store: dict[str, Any] | None
    training: dict[str, Any] = field(default_factory=dict)
    stage_keys: dict[str, str] = field(default_factory=dict)  # shared stage name → its training key


def weights_digest(module: torch.nn.Module, *, remember: bool = True) -> str:
    """sha256 of a module's tensors (names, shapes, dtypes, values): the backbone's identity, whatever path or hub id
    it was loaded from. Cached on the module, which the harness never trains (every method trains a copy), unless
    `remember` is False (a trained model's weights, `evaluation_cache`)."""
    cached = getattr(module, "_cee_weights_digest", None)
    if cached is None:
        digest = hashlib.sha256()
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        cached = digest.hexdigest()
        if remember:
            module._cee_weights_digest = cached
    return cached


def data_digest(data: Encoded) -> str:
    """sha256 of a tokenised split (ids, segment ids, labels, in order)."""
    payload = [data.input_ids, data.token_type_ids, data.labels.tolist()]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def base_identity(task: Task, encoder: torch.nn.Module, data: dict[str, Encoded], *, pooling: str, seed: int,
                  eval_batch_size: int, dtype: str) -> dict[str, Any]:
    """What every training of a run shares: the code (its fingerprint, so weights trained by other code are never
    reused as this code's: no version number to remember to bump), task, backbone weights, training and held-out
    rows, pooling, seed and the precision it trains at (bf16 weights are other weights than fp32's)."""
    return {"code": code_identity()["fingerprint"], "task": task.name, "num_labels": task.num_labels,
            "backbone": weights_digest(encoder), "pooling": pooling, "seed": seed, "eval_batch_size": eval_batch_size,
            "dtype": dtype,
            "data": {"train": data_digest(data["train"]), "heldout": data_digest(data["heldout"])}}


class MethodTrainer:
    """One method's training in one run: the store as this run sees it, and the `training` block it fills."""

    def __init__(self, method: Method, task: Task, encoder: torch.nn.Module, data: dict[str, Encoded],
                 stages: dict[str, Stage], opts: RunOptions, progress: Progress, eval_batch_size: int) -> None:
        self.method, self.task, self.encoder, self.data, self.stages = method, task, encoder, data, stages
        self.opts, self.progress, self.eval_batch_size = opts, progress, eval_batch_size
        self.store = ModelStore(opts.output_dir, task.name, log=progress.log, warn=progress.warn) \
            if opts.share else None
        if self.store is not None and distributed.is_main():
            self.store.clear_debris()
        self.base = base_identity(task, encoder, data, pooling=opts.pooling, seed=opts.seed, dtype=opts.dtype,
                                  eval_batch_size=eval_batch_size)
        self.training: dict[str, Any] = {"store": "off" if self.store is None else
                                         "retrain" if opts.retrain else "reuse",
                                         "reused_from": [], "trained": [], "not_shared": {}, "steps": 0}

    # --- the store ------------------------------------------------------------------------------------------------

    def claim(self, key: str) -> ContextManager[None]:
        """Hold `key`'s lock on the main process (the others follow it): `find`, train and `save` inside."""
        return self.store.claim(key) if self.store is not None and distributed.is_main() else nullcontext()

    def find(self, key: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The verified entry of `key` when its identity is exactly `identity` (and, under `retrain`, this run wrote
        it); the main process decides, so every process makes the same choice."""
        entry = None
        if self.store is not None and distributed.is_main() and (not self.opts.retrain or key in self.opts.fresh):
            entry = self.store.find(key, identity)
        return distributed.from_main(entry)

    def load(self, key: str, model: MultiExitModel) -> None:
        load_weights(self.store.folder(key), model)

    def save(self, key: str, identity: dict[str, Any], model: MultiExitModel, layout: Method,
             info: dict[str, Any]) -> None:
        """Store `model` (built as `layout`) under `key`; main process only, then every process waits, so the next
        method of this run finds it on any process."""
        if self.store is None:
            return
        if distributed.is_main():
            record = result_path(Path("."), self.task.name, self.method.name, self.opts.seed)
            save_entry(self.store.folder(key), model, task=self.task.name, method=layout.name, seed=self.opts.seed,
                       pooling=self.opts.pooling, backbone=self.encoder,
                       extra={"key": key, "identity": canonical(identity), **canonical(info),
                              "trained_by": {"method": self.method.name, "record": str(record)},
                              "trained_on": {"device": self.opts.resolved_device,
                                             "processes": distributed.world_size()}})
        self.opts.fresh.add(key)
        distributed.barrier()

    def drop(self, key: str) -> None:
        if self.store is not None and distributed.is_main():
            with self.store.claim(key):
                self.store.drop(key)

    # --- the training block -----------------------------------------------------------------------------------------

    def reused(self, stage: str, key: str, entry: dict[str, Any]) -> None:
        self.training["reused_from"].append({"stage": stage, "recipe": key, **entry["trained_by"],
                                             "entry": str(Path("models") / self.task.name / key)})
        self.progress.log(f"  {stage}: reused training {key} (trained by {entry['trained_by']['method']})")

    def trained(self, stage: str, key: str, steps: dict[str, int]) -> None:
        self.training["trained"].append({"stage": stage, "recipe": key, "steps": sum(steps.values()),
                                         "stage_steps": dict(steps)})
        self.training["steps"] += sum(steps.values())

    # --- the loop -----------------------------------------------------------------------------------------------------

    def context(self, model: MultiExitModel, stages: dict[str, Stage]) -> FitContext:
        return FitContext(model, self.data["train"], self.data["heldout"], stages, seed=self.opts.seed,
                          device=self.opts.resolved_device, progress=self.progress,
                          eval_batch_size=self.eval_batch_size, main_metric=self.task.main_metric)

    def train_or_load(self, layout: Method, model: MultiExitModel, stages: dict[str, Stage], parents: list[str],
                      label: str, ctx: FitContext | None = None) -> tuple[str, dict[str, Any]]:
        """Give `model` (built as `layout`) the weights of `layout.fit` over `stages` after `parents`: loaded when
        stored, else trained (the global RNG seeded first, so a stage trains the same wherever it starts) and
        stored. Returns the key and the entry's log and meta."""
        # "recipe" is the identity's original word for the method whose training this is: kept, as every stored key
        # is a hash of it
        identity = {**self.base, "recipe": layout.trained_as or layout.name, "parents": parents,
                    "stages": {name: asdict(stage) for name, stage in stages.items()}}
        key = training_key(identity)
        with self.claim(key):  # a second process training this key waits here, then loads what this one stored
            entry = self.find(key, identity)
            if entry is not None:
                self.load(key, model)
                self.reused(label, key, entry)
                return key, entry
            ctx = ctx or self.context(model, stages)
            torch.manual_seed(self.opts.seed)
            if layout.fit(ctx):
                raise TypeError(f"{layout.name}.fit returns several models: set resumes_rounds and use "
                                "ctx.checkpoints")
            info = {"log": ctx.log, "meta": ctx.meta, "steps": sum(ctx.steps.values()), "stage_steps": ctx.steps}
            self.save(key, identity, model, layout, info)
        self.trained(label, key, ctx.steps)
        return key, canonical(info)

    def run(self) -> Trained:
        """Train (or load) every stage of the method for this run: see the module docstring."""
        method, opts = self.method, self.opts
        model = build_model(method, self.encoder, self.task, opts.pooling, opts.seed, opts.dtype)
        log: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        parents: list[str] = []
        for stage_name, source_name in method.shares.items():
            source = get_method(source_name)
            (source_stage,) = source.stages[opts.preset]
            settings, theirs = self.stages[stage_name], resolve_stages(source, opts)[source_stage]
            if settings != theirs:
                self.training["not_shared"][stage_name] = (
                    f"{method.name}'s stage '{stage_name}' differs from {source.name}'s stage '{source_stage}' under "
                    f"the '{opts.preset}' preset ({_differences(settings, theirs)}): trained on its own")
            source_model = build_model(source, self.encoder, self.task, opts.pooling, opts.seed, opts.dtype)
            key, entry = self.train_or_load(source, source_model, {source_stage: settings}, [], stage_name)
            method.adopt(model, source_model)
            del source_model
            log[stage_name] = entry["log"][source_stage]
            meta.update(entry["meta"])
            parents.append(key)
        own = {name: stage for name, stage in self.stages.items() if name not in method.shares}
        variants: dict[Any, MultiExitModel] = {}
        if not own:
            files = {SINGLE: parents[-1]}
        elif method.resumes_rounds:
            ctx = self.context(model, self.stages)
            ctx.checkpoints = StoreCheckpoints(self, {**self.base, "recipe": method.trained_as or method.name,
                                                      "parents": parents}, ctx)
            torch.manual_seed(opts.seed)
            variants = method.fit(ctx) or {}
            log.update(ctx.log)
            meta.update(ctx.meta)
            files = dict(ctx.checkpoints.latest)
        else:
            key, entry = self.train_or_load(method, model, own, parents, "+".join(own),
                                            self.context(model, self.stages))
            log.update(entry["log"])
            meta.update(entry["meta"])
            files = {SINGLE: key}
        model.to(torch.device(opts.resolved_device)).eval()
        store = None if self.store is None else {"path": str(self.store.root.relative_to(opts.output_dir)),
                                                 "files": files}
        return Trained(model, variants, log, meta, store, self.training, dict(zip(method.shares, parents)))


class StoreCheckpoints(Checkpoints):
    """`Checkpoints` in the model store: round r of a series is one training (the method's identity, the series'
    settings, r); saving round r drops round r−1, so each series keeps its last round, which is also the model it
    ends with (`latest`: series → key)."""

    def __init__(self, trainer: MethodTrainer, identity: dict[str, Any], ctx: FitContext) -> None:
        self.trainer, self.identity, self.ctx = trainer, identity, ctx
        self.latest: dict[str, str] = {}
        self._chain: dict[str, tuple[int, int]] = {}  # series → (steps of its stored rounds, ctx steps at that time)

    def _key(self, series: str, settings: dict[str, Any], round_number: int) -> tuple[str, dict[str, Any]]:
        identity = {**self.identity, "series": series, "settings": settings, "round": round_number}
        return training_key(identity), identity

    def _executed(self) -> int:
        return sum(self.ctx.steps.values())

    def resume(self, series: str, settings: dict[str, Any], rounds: int, model: MultiExitModel) -> list[Any] | None:
        self._chain[series] = (0, self._executed())
        for round_number in range(rounds, 0, -1):
            key, identity = self._key(series, settings, round_number)
            with self.trainer.claim(key):
                entry = self.trainer.find(key, identity)
            if entry is not None:
                self.trainer.load(key, model)
                self.trainer.reused(f"{series} rounds 1-{round_number}", key, entry)
                self.latest[series] = key
                self._chain[series] = (entry["steps"], self._executed())
                return entry["log"]
        return None

    def save(self, series: str, settings: dict[str, Any], round_number: int, model: MultiExitModel,
             log: list[Any]) -> None:
        stored, mark = self._chain.get(series, (0, self._executed()))
        now = self._executed()
        key, identity = self._key(series, settings, round_number)
        with self.trainer.claim(key):
            self.trainer.save(key, identity, model, self.trainer.method,
                              {"log": log, "steps": stored + now - mark, "round": round_number})
        self.trainer.trained(f"{series} round {round_number}", key, {"rounds": now - mark})
        previous = self.latest.get(series)
        if previous is not None and previous != key:
            self.trainer.drop(previous)
        self.latest[series] = key
        self._chain[series] = (stored + now - mark, now)


def _differences(a: Stage, b: Stage) -> str:
    mine, theirs = asdict(a), asdict(b)
    return ", ".join(f"{k} {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs.get(k))
