"""The training recipe (`TrainingConfig`) and what a checkpoint remembers to resume exactly (`TrainerState`).

A recipe comes from a YAML / JSON file (`--config`, see `recipes/example.yaml`), with command-line options on
top. Both are validated here, so a typo in a file fails before any model is loaded.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy

# The shared training sets (README.md of the training folder) by the names `--mix` uses.
SHARED_SOURCES: dict[str, tuple[str, ...]] = {
    "squad": ("squad_v1.1_train",),
    "nq": ("nq_qed_train.jsonl.gz",),
    "medquad": ("medquad.jsonl.gz",),
    "covid": ("covid_faq.jsonl.gz", "covid_qa_paragraphs.jsonl.gz"),
    "covid_faq": ("covid_faq.jsonl.gz",),
    "covid_qa": ("covid_qa_paragraphs.jsonl.gz",),
}
VALIDATION_SETS: dict[str, str] = {"squad_dev": "squad_v1.1_dev", "nq_dev": "nq_qed_dev.jsonl.gz"}
# Sources that are not in `mix` but can still carry a negative weight.
OWN_SOURCES = ("pairs", "beir")
# Fields a resumed run may change without breaking the exact continuation of the interrupted one.
RESUME_OVERRIDABLE = frozenset(
    {
        "max_steps",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "stop_after",
        "validation",
        "val_queries",
        "val_candidates",
        "export_small",
        "device",
        "num_threads",
        "progress",
        "output_dir",
    }
)


class TrainingConfigError(ColBERTAttError, ValueError):
    """A training recipe or command-line option is invalid."""


class TrainingScore(StrEnum):
    """The score the loss is computed on: Eq. 2 with delta = 1, or plain MaxSim."""

    COLBERT_ATT = "colbert_att"
    MAXSIM = "maxsim"


class ProjectionInit(StrEnum):
    """pca: the top singular directions of token vectors of training texts; orthogonal: random orthonormal rows."""

    PCA = "pca"
    ORTHOGONAL = "orthogonal"


class MarkerMode(StrEnum):
    """inherit: the starting checkpoint's [Q]/[D] markers (none for the bundled MiniLM); colbert: [unused0] and
    [unused1] after [CLS], as Stanford ColBERT; none: no markers."""

    INHERIT = "inherit"
    COLBERT = "colbert"
    NONE = "none"


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # ---- model --------------------------------------------------------------------------------------------
    model: str | None = Field(default=None, description="Starting checkpoint folder; None: the bundled MiniLM.")
    output_dir: str = "runs/train"
    projection_dim: int | None = Field(default=None, ge=8, le=4096, description="New linear projection; None: none.")
    projection_init: ProjectionInit = ProjectionInit.PCA
    pca_texts: int = Field(default=256, ge=8, description="Training documents whose tokens initialise the PCA.")
    markers: MarkerMode = MarkerMode.INHERIT
    query_expansion: bool | None = Field(default=None, description="[MASK] query padding; None: the checkpoint's.")
    query_max_tokens: int = Field(default=32, ge=4, le=512)
    document_max_tokens: int = Field(default=180, ge=8, le=512)
    attention_strategy: AttentionStrategy = AttentionStrategy.CLS_ALL
    attention_scaling: AttentionScaling = AttentionScaling.RAW
    attention_temperature: float = Field(default=1.0, gt=0)
    skip_document_punctuation: bool = True
    freeze_embeddings: bool = Field(default=True, description="Keep the word embeddings (11.7M values) frozen.")

    # ---- score and loss -----------------------------------------------------------------------------------
    score: TrainingScore = TrainingScore.COLBERT_ATT
    attention_grad: bool = Field(
        default=False, description="Back-propagate through A (the attention weights); by default A is detached."
    )
    temperature: float = Field(
        default=0.05,
        gt=0,
        description="Logits = S / sum_i exp(A_qi) / temperature (a cosine-scale score). Tuned for raw A; with "
        "by_length scaling exp(A_dw) can reach e^10 and more, so the logits need a much larger temperature.",
    )
    delta_length_words: float | None = Field(
        default=None, gt=0, description="None: delta = 1 while training (paper); else min(1, doc_len / this)."
    )
    hard_negatives: int = Field(default=1, ge=0, le=32, description="Given negatives per query, besides in-batch.")

    # ---- data ---------------------------------------------------------------------------------------------
    training_data_dir: str | None = Field(default=None, description="The shared training folder; None: found.")
    mix: dict[str, float] = Field(default_factory=lambda: {"squad": 0.5, "nq": 0.2, "medquad": 0.2, "covid": 0.1})
    negative_weights: dict[str, float] = Field(
        default_factory=lambda: {"medquad": 0.5},
        description="Per source: 1 keeps its given negatives, 0 drops them, in between down-weights them.",
    )
    pairs: list[str] = Field(default_factory=list, description="The house's own jsonl files of labelled pairs.")
    pairs_weight: float = Field(default=0.5, gt=0)
    beir_dir: str | None = None
    beir_split: str = "train"
    beir_weight: float = Field(default=0.5, gt=0)
    beir_negatives: int = Field(
        default=0,
        ge=0,
        le=32,
        description="Hard negatives mined per BEIR query with BM25 (stemmed) over its corpus, judged documents "
        "excluded; a BEIR split has no negatives of its own.",
    )
    shuffle_buffer: int = Field(default=8192, ge=1, description="Rows held per source for streaming shuffles.")
    max_document_chars: int = Field(default=4000, ge=100, description="Long texts are cut before tokenising.")
    seed: int = 13

    # ---- optimisation -------------------------------------------------------------------------------------
    max_steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=2e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)

    # ---- run control --------------------------------------------------------------------------------------
    save_every: int = Field(default=200, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    log_every: int = Field(default=10, ge=1)
    stop_after: int | None = Field(
        default=None, ge=1, description="Stop (and save) after this many steps in this invocation; resume later."
    )
    validation: str | None = Field(
        default="squad_dev", description="squad_dev, nq_dev, a jsonl file of pairs, or None for no validation."
    )
    val_queries: int = Field(default=300, ge=1)
    val_candidates: int = Field(default=30, ge=2, description="Candidates each validation query re-ranks.")
    export_small: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1)
    progress: bool = True

    @field_validator("mix")
    @classmethod
    def _known_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(SHARED_SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown} in mix; known: {sorted(SHARED_SOURCES)}")
        if any(weight < 0 for weight in mix.values()):
            raise ValueError("mix weights must be >= 0")
        return {name: float(weight) for name, weight in mix.items() if weight > 0}

    @field_validator("negative_weights")
    @classmethod
    def _known_negative_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(SHARED_SOURCES) - set(OWN_SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown} in negative_weights")
        if any(not 0.0 <= weight <= 1.0 for weight in weights.values()):
            raise ValueError("negative weights must lie in [0, 1]")
        return weights

    @field_validator("validation", mode="before")
    @classmethod
    def _none_validation(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none", "off") else value

    @model_validator(mode="after")
    def _some_data(self) -> TrainingConfig:
        if not self.mix and not self.pairs and self.beir_dir is None:
            raise ValueError("no training data: give a mix, --pairs files or a --beir-dir")
        return self

    def negative_weight(self, source: str) -> float:
        return float(self.negative_weights.get(source, 1.0))


class SourceState(BaseModel):
    """Where one source's stream stands: its pass over the data and the rows read in that pass."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = 0
    consumed: int = 0


class StreamState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mixer_rng: dict[str, Any]
    sources: dict[str, SourceState]
    examples: int = 0


class TrainerState(BaseModel):
    """Saved beside every checkpoint (`trainer_state.json`); tensors (optimizer, RNG) go to `trainer_state.pt`."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    step: int = Field(ge=0)
    config: TrainingConfig
    stream: StreamState
    trained_projection: bool = Field(description="False: the saved 1_Dense is an identity written for PyLate only.")
    base_model: str
    last_loss: float | None = None
    validation: list[dict[str, float]] = Field(default_factory=list)


def parse_weights(text: str, option: str) -> dict[str, float]:
    """'squad=0.5,nq=0.2' (or 'none') as a dict."""
    if text.strip().lower() in ("", "none"):
        return {}
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError as exc:
            raise TrainingConfigError(
                f"{option}: expected name=weight pairs separated by commas, got {part!r}."
            ) from exc
    return weights


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingConfigError(f"Training config file {path} does not exist.")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TrainingConfigError(f"Training config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise TrainingConfigError(f"Training config file {path} must hold a mapping of option names to values.")
    return data


def build_config(base: dict[str, Any], overrides: dict[str, Any], source: str = "options") -> TrainingConfig:
    """Validate `base` (a file's values) with `overrides` (options given on the command line) on top."""
    try:
        return TrainingConfig.model_validate({**base, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise TrainingConfigError(f"Invalid training {source}: {problems}") from exc


def resumed_config(saved: TrainingConfig, overrides: dict[str, Any]) -> TrainingConfig:
    """The saved recipe with the options a resumed run may change; any other change is an error."""
    changed = sorted(
        key
        for key, value in overrides.items()
        if value is not None and key not in RESUME_OVERRIDABLE and getattr(saved, key) != value
    )
    if changed:
        raise TrainingConfigError(
            f"--resume continues the saved recipe; these options differ from it and cannot change: {changed}. "
            "Start a new run in another --output-dir to change them."
        )
    return build_config(saved.model_dump(mode="json"), overrides, "options for the resumed run")
