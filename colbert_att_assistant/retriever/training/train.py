"""The training loop: `Trainer` runs (or resumes) a recipe, checkpoints, validates and exports the model (the
command line is `cli.py`).

Output directory:

    checkpoints/step-0000200/   full model folder (PyLate layout, see export.py) + trainer_state.json
                                + trainer_state.pt (optimizer, scheduler, RNG states): --resume continues from
                                the newest one so that the next step is the one an uninterrupted run takes
    metrics.jsonl               one JSON object per line: training loss / lr / steps per second every
                                --log-every steps, validation metrics at every checkpoint
    model/                      the final model (PyLate layout), loadable by `load_checkpoint` and PyLate
    compact/                    with --export-small: the compact shipped form (export.py)
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colbert_att_assistant.retriever.checkpoint import (
    BUNDLED_MODEL_NAME,
    LoadedCheckpoint,
    load_checkpoint,
    resolve_model_path,
)
from colbert_att_assistant.retriever.settings import EncoderSettings
from colbert_att_assistant.retriever.training.config import (
    MarkerMode,
    ProjectionInit,
    TrainerState,
    TrainingConfig,
    TrainingConfigError,
)
from colbert_att_assistant.retriever.training.data import (
    TrainingExample,
    TrainingStream,
    ValidationSet,
    load_validation_set,
)
from colbert_att_assistant.retriever.training.export import export_compact, save_model_folder
from colbert_att_assistant.retriever.training.loss import contrastive_loss, late_interaction_scores, layout_batch
from colbert_att_assistant.retriever.training.model import TrainableColBERT, initial_projection
from colbert_att_assistant.retriever.training.validation import evaluate

logger = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.pt"
FINAL_MODEL = "model"
COMPACT_MODEL = "compact"
COLBERT_MARKERS = ("[unused0]", "[unused1]")


@dataclass
class TrainResult:
    step: int
    losses: dict[int, float] = field(default_factory=dict)
    validation: list[dict[str, float]] = field(default_factory=list)
    steps_per_s: float = 0.0
    model_dir: Path | None = None
    compact_dir: Path | None = None


def encoder_settings(config: TrainingConfig) -> EncoderSettings:
    return EncoderSettings(
        attention_strategy=config.attention_strategy,
        attention_scaling=config.attention_scaling,
        attention_temperature=config.attention_temperature,
        query_max_tokens=config.query_max_tokens,
        document_max_tokens=config.document_max_tokens,
        skip_document_punctuation=config.skip_document_punctuation,
    )


def choose_device(kind: str) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise TrainingConfigError("--device cuda was asked for but torch sees no CUDA device.")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(kind)


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """Complete checkpoints (renamed into place only once fully written), oldest first."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if (p / STATE_JSON).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _learning_rate_factor(config: TrainingConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.0, (config.max_steps - step) / max(1, config.max_steps - config.warmup_steps))

    return factor


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class Trainer:
    """One training run: model, optimizer, scheduler, data stream; fresh or resumed from `output_dir`."""

    def __init__(self, config: TrainingConfig, resume: bool = False):
        self.config = config
        self.output_dir = Path(config.output_dir)
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.device = choose_device(config.device)
        self.settings = encoder_settings(config)
        existing = checkpoint_folders(self.output_dir)
        if resume and not existing:
            raise TrainingConfigError(f"Nothing to resume: {self.output_dir / CHECKPOINTS} holds no checkpoint.")
        if not resume and existing:
            raise TrainingConfigError(
                f"{self.output_dir} already holds checkpoints (newest {existing[-1].name}): pass --resume to continue "
                "that run, or choose another --output-dir."
            )
        self.stream = TrainingStream(config)
        self.validation_set: ValidationSet | None = load_validation_set(config)
        self.history: list[dict[str, float]] = []
        if resume:
            self._resume(existing[-1])
        else:
            self._start()

    # ---- set-up -------------------------------------------------------------------------------------------

    def _start(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        checkpoint = load_checkpoint(config.model)
        self.base_model = BUNDLED_MODEL_NAME if config.model is None else resolve_model_path(config.model)[1]
        info = checkpoint.info
        updates: dict[str, Any] = {}
        if config.markers is MarkerMode.COLBERT:
            updates.update(query_marker=COLBERT_MARKERS[0], document_marker=COLBERT_MARKERS[1])
        elif config.markers is MarkerMode.NONE:
            updates.update(query_marker=None, document_marker=None)
        if config.query_expansion is not None:
            updates["query_expansion"] = config.query_expansion
        checkpoint = replace(checkpoint, info=info.model_copy(update=updates))
        self.trained_projection = checkpoint.projection is not None
        if config.projection_dim is not None:
            if checkpoint.projection is not None:
                raise TrainingConfigError(
                    f"{config.model} already has a {checkpoint.projection.out_features}-dim projection; train it as "
                    "it is (no --projection-dim) or start from an encoder without one."
                )
            checkpoint = replace(checkpoint, projection=self._new_projection(checkpoint))
            self.trained_projection = True
        self.model = self._prepare(checkpoint)
        self.step = 0

    def _new_projection(self, checkpoint: LoadedCheckpoint) -> torch.nn.Linear:
        config = self.config
        hidden = int(checkpoint.backbone.config.hidden_size)
        sample = None
        if config.projection_init is ProjectionInit.PCA:
            # Token vectors of the first training documents, from a separate stream (the training one is untouched).
            plain = TrainableColBERT(checkpoint, self.settings).to(self.device).eval()
            texts = [e.positive for e in TrainingStream(self.config, self.stream.sources).next_batch(config.pca_texts)]
            with torch.no_grad():
                vectors = []
                for start in range(0, len(texts), 32):
                    batch = plain.encode(texts[start : start + 32], is_query=False)
                    vectors.append(batch.vectors[batch.keep].float().cpu())
            sample = torch.cat(vectors)
        try:
            return initial_projection(config.projection_init.value, config.projection_dim, hidden, config.seed, sample)
        except ValueError as exc:
            raise TrainingConfigError(f"Cannot initialise the projection: {exc}") from exc

    def _prepare(self, checkpoint: LoadedCheckpoint) -> TrainableColBERT:
        config = self.config
        model = TrainableColBERT(checkpoint, self.settings, attention_grad=config.attention_grad).to(self.device)
        if config.freeze_embeddings:
            model.backbone.get_input_embeddings().weight.requires_grad_(False)
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
        self.parameters = decay + no_decay
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _learning_rate_factor(config))
        return model

    def _resume(self, folder: Path) -> None:
        state = TrainerState.model_validate_json((folder / STATE_JSON).read_text())
        self.base_model = state.base_model
        self.trained_projection = state.trained_projection
        checkpoint = load_checkpoint(str(folder))
        if not state.trained_projection:
            checkpoint = replace(checkpoint, projection=None)  # the saved identity exists for PyLate only
        self.model = self._prepare(checkpoint)
        tensors = torch.load(folder / STATE_TENSORS, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        self.stream.restore(state.stream)
        self.step = state.step
        self.history = list(state.validation)
        _restore_rng(tensors["rng"])
        self._log({"event": "resume", "step": self.step, "from": str(folder)})

    # ---- training -----------------------------------------------------------------------------------------

    def batch_loss(self, examples: list[TrainingExample]) -> torch.Tensor:
        layout = layout_batch(examples)
        queries = self.model.encode(layout.queries, is_query=True)
        documents = self.model.encode(layout.documents, is_query=False)
        scores, normaliser = late_interaction_scores(
            queries, documents, self.config.score, self.config.delta_length_words
        )
        return contrastive_loss(scores, normaliser, layout, self.config.temperature)

    def train_step(self, examples: list[TrainingExample]) -> float:
        self.model.train()
        loss = self.batch_loss(examples)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    @torch.no_grad()
    def eval_loss(self, examples: list[TrainingExample]) -> float:
        """The loss of a batch without dropout and without training on it."""
        was_training = self.model.training
        self.model.eval()
        try:
            return float(self.batch_loss(examples))
        finally:
            self.model.train(was_training)

    def run(self) -> TrainResult:
        config = self.config
        result = TrainResult(step=self.step, validation=self.history)
        steps_here = 0
        train_seconds = 0.0
        window_steps, window_seconds = 0, 0.0
        with self._progress() as advance:
            while self.step < config.max_steps:
                started = time.perf_counter()
                loss = self.train_step(self.stream.next_batch(config.batch_size))
                elapsed = time.perf_counter() - started
                self.step += 1
                steps_here += 1
                train_seconds += elapsed
                window_steps += 1
                window_seconds += elapsed
                result.losses[self.step] = loss
                rate = window_steps / window_seconds if window_seconds > 0 else 0.0
                advance(loss, rate)
                if self.step % config.log_every == 0 or self.step == config.max_steps:
                    self._log(
                        {
                            "event": "train",
                            "step": self.step,
                            "loss": loss,
                            "lr": self.scheduler.get_last_lr()[0],
                            "steps_per_s": rate,
                            "examples": self.stream.examples,
                        }
                    )
                    window_steps, window_seconds = 0, 0.0
                stop = config.stop_after is not None and steps_here >= config.stop_after
                if self.step % config.save_every == 0 or self.step == config.max_steps or stop:
                    self.save_checkpoint(loss)
                if stop:
                    break
        result.step = self.step
        result.steps_per_s = steps_here / train_seconds if train_seconds > 0 else 0.0
        if self.step >= config.max_steps:
            result.model_dir = self.output_dir / FINAL_MODEL
            self._replace_folder(result.model_dir, lambda tmp: save_model_folder(self.model, tmp, self._info()))
            if config.export_small:
                result.compact_dir = self.output_dir / COMPACT_MODEL
                self._replace_folder(
                    result.compact_dir, lambda tmp: export_compact(result.model_dir, tmp, self.base_model)
                )
        return result

    # ---- checkpoints, validation, logs ----------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "trained_projection": self.trained_projection,
            "step": self.step,
            "score": self.config.score.value,
            "attention_strategy": self.config.attention_strategy.value,
            "attention_scaling": self.config.attention_scaling.value,
            "attention_temperature": self.config.attention_temperature,
            "config": self.config.model_dump(mode="json"),
        }

    def validate(self) -> dict[str, float] | None:
        if self.validation_set is None:
            return None
        metrics = {"step": float(self.step), **evaluate(self.model, self.validation_set)}
        self.history.append(metrics)
        self._log({"event": "validation", "set": self.validation_set.name, **metrics, "step": self.step})
        return metrics

    def save_checkpoint(self, loss: float | None = None) -> Path:
        rng = _rng_state()  # taken before validation, which must not change what the next step sees
        self.validate()
        folder = self.output_dir / CHECKPOINTS / f"step-{self.step:07d}"
        state = TrainerState(
            step=self.step,
            config=self.config,
            stream=self.stream.state(),
            trained_projection=self.trained_projection,
            base_model=self.base_model,
            last_loss=loss,
            validation=self.history,
        )

        def write(tmp: Path) -> None:
            save_model_folder(self.model, tmp, self._info())
            torch.save(
                {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "rng": rng},
                tmp / STATE_TENSORS,
            )
            (tmp / STATE_JSON).write_text(state.model_dump_json(indent=1))

        self._replace_folder(folder, write)
        for old in checkpoint_folders(self.output_dir)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old)
        self._log({"event": "checkpoint", "step": self.step, "path": str(folder)})
        return folder

    @staticmethod
    def _replace_folder(folder: Path, write) -> None:
        """Write into a temporary sibling, then rename: a folder under its final name is always complete."""
        tmp = folder.with_name(f".tmp-{folder.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    def _log(self, record: dict[str, Any]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / METRICS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    @contextmanager
    def _progress(self) -> Iterator[Callable[[float, float], None]]:
        """A rich progress bar with the loss and steps per second; yields its update function."""
        if not self.config.progress:
            yield lambda loss, rate: None
            return
        columns = (
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.3f} steps/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("train", total=self.config.max_steps, completed=self.step, loss=0.0, rate=0.0)
            yield lambda loss, rate: progress.update(task, advance=1, loss=loss, rate=rate)


def train(config: TrainingConfig, resume: bool = False) -> TrainResult:
    """Run (or continue) training as the command line does."""
    return Trainer(config, resume=resume).run()
