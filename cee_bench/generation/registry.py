"""The generation methods by name (torch-free, so the CLI can list and validate them instantly)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    display: str
    family: str  # "calm" or "consistentee"
    measure: str | None = None
    exits: str = "shared"  # "shared": final norm + LM head as is; "anytime": + adapters trained with weighted CE


METHOD_SPECS: dict[str, MethodSpec] = {
    # Plain "calm" is hidden-state saturation: the CALM baseline ConsistentEE-LLM itself runs (its mode 5, §2.3),
    # and the one measure cheap enough on a 49k vocabulary (softmax needs the full head at every layer).
    "calm": MethodSpec("calm", "CALM (state)", "calm", "state"),
    "calm-softmax": MethodSpec("calm-softmax", "CALM (softmax)", "calm", "softmax"),
    "calm-state": MethodSpec("calm-state", "CALM (state)", "calm", "state"),
    "calm-meta": MethodSpec("calm-meta", "CALM (classifier)", "calm", "meta"),
    # CALM fine-tunes its exits with a weighted per-exit CE (§8.2); with the backbone frozen, the "-anytime"
    # variants train the same low-rank exit adapters as ConsistentEE's stage 1 (one shared training per run).
    "calm-anytime": MethodSpec("calm-anytime", "CALM (state, anytime exits)", "calm", "state", "anytime"),
    "calm-softmax-anytime": MethodSpec("calm-softmax-anytime", "CALM (softmax, anytime exits)", "calm", "softmax",
                                       "anytime"),
    "consistentee": MethodSpec("consistentee", "ConsistentEE", "consistentee", exits="anytime"),
}
GENERATION_METHODS: tuple[str, ...] = tuple(METHOD_SPECS)


def needs_training(spec: MethodSpec) -> bool:
    """Methods with a trained part (and so a training text): ConsistentEE and CALM's classifier."""
    return spec.exits == "anytime" or spec.measure == "meta"
