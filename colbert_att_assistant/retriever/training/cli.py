"""The training command line: `python -m colbert_att_assistant.retriever.training --help`.

    python -m colbert_att_assistant.retriever.training --output-dir runs/minilm-colbert --max-steps 2000 --batch-size 16
    python -m colbert_att_assistant.retriever.training \
        --config colbert_att_assistant/retriever/training/recipes/example.yaml --max-steps 50 --stop-after 10
    python -m colbert_att_assistant.retriever.training --output-dir runs/minilm-colbert --resume  # where it stopped
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from transformers.utils import logging as transformers_logging

from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy
from colbert_att_assistant.retriever.training.config import (
    MarkerMode,
    ProjectionInit,
    TrainerState,
    TrainingConfig,
    TrainingConfigError,
    TrainingScore,
    build_config,
    parse_weights,
    read_config_file,
    resumed_config,
)
from colbert_att_assistant.retriever.training.train import CHECKPOINTS, STATE_JSON, checkpoint_folders, train

console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(add_completion=False, help="Fine-tune the encoder for ColBERT-Att retrieval.")


@app.command()
def main(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML / JSON recipe; options override it.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Starting checkpoint folder (default: bundled MiniLM).")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Checkpoints, metrics.jsonl and the final model.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the newest checkpoint in --output-dir with its saved recipe.")
    ] = False,
    projection_dim: Annotated[int | None, typer.Option(help="Add a new linear projection to this size.")] = None,
    projection_init: Annotated[ProjectionInit | None, typer.Option()] = None,
    markers: Annotated[MarkerMode | None, typer.Option(help="Query / document marker tokens.")] = None,
    query_expansion: Annotated[
        bool | None, typer.Option(help="Pad queries with [MASK] (default: the checkpoint's convention).")
    ] = None,
    score: Annotated[TrainingScore | None, typer.Option(help="Score the loss is computed on.")] = None,
    attention_grad: Annotated[bool | None, typer.Option(help="Back-propagate through A (default: detached).")] = None,
    attention_strategy: Annotated[AttentionStrategy | None, typer.Option()] = None,
    attention_scaling: Annotated[AttentionScaling | None, typer.Option()] = None,
    hard_negatives: Annotated[
        int | None, typer.Option(help="Given negatives per query, besides in-batch ones.")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Softmax temperature on cosine-scale scores.")] = None,
    mix: Annotated[str | None, typer.Option(help="Shared sources by weight, e.g. squad=0.5,nq=0.2 (or none).")] = None,
    negative_weight: Annotated[
        str | None, typer.Option(help="Per-source weight of given negatives, e.g. medquad=0.5 (0 drops them).")
    ] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option(help="jsonl file of {query, positive, negatives} rows (add --mix none to train on it alone)."),
    ] = None,
    pairs_weight: Annotated[float | None, typer.Option()] = None,
    beir_dir: Annotated[str | None, typer.Option(help="BEIR-format folder to train on.")] = None,
    beir_split: Annotated[str | None, typer.Option()] = None,
    beir_weight: Annotated[float | None, typer.Option()] = None,
    beir_negatives: Annotated[
        int | None, typer.Option(help="BM25-mined hard negatives per BEIR query (judged documents excluded).")
    ] = None,
    training_data_dir: Annotated[str | None, typer.Option(help="The shared training folder.")] = None,
    query_max_tokens: Annotated[int | None, typer.Option()] = None,
    document_max_tokens: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    warmup_steps: Annotated[int | None, typer.Option()] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint (and validate) every N steps.")] = None,
    log_every: Annotated[int | None, typer.Option()] = None,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after N steps of this invocation (then --resume).")
    ] = None,
    validation: Annotated[str | None, typer.Option(help="squad_dev, nq_dev, a jsonl file, or none.")] = None,
    val_queries: Annotated[int | None, typer.Option()] = None,
    freeze_embeddings: Annotated[bool | None, typer.Option(help="Keep word embeddings frozen (default on).")] = None,
    export_small: Annotated[bool | None, typer.Option(help="Also write the compact model at the end.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    num_threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    progress: Annotated[bool | None, typer.Option(help="Show a progress bar.")] = None,
) -> None:
    """Train, checkpoint, validate; --resume continues an interrupted run exactly."""
    logging.basicConfig(level=logging.WARNING)
    transformers_logging.disable_progress_bar()  # its per-save bars would break up ours
    options = {
        key: value
        for key, value in locals().items()
        if key not in ("config_file", "resume", "mix", "negative_weight", "pairs") and value is not None
    }
    try:
        if mix is not None:
            options["mix"] = parse_weights(mix, "--mix")
        if negative_weight is not None:
            options["negative_weights"] = parse_weights(negative_weight, "--negative-weight")
        if pairs:
            options["pairs"] = list(pairs)
        if resume:
            from_file = read_config_file(config_file).get("output_dir") if config_file is not None else None
            folder = Path(output_dir or from_file or TrainingConfig.model_fields["output_dir"].default)
            existing = checkpoint_folders(folder)
            if not existing:
                raise TrainingConfigError(f"Nothing to resume: no checkpoint under {folder / CHECKPOINTS}.")
            saved = TrainerState.model_validate_json((existing[-1] / STATE_JSON).read_text()).config
            config = resumed_config(saved, options)
        else:
            base = read_config_file(config_file) if config_file is not None else {}
            config = build_config(base, options, "recipe" if config_file is None else f"recipe {config_file}")
        result = train(config, resume=resume)
    except ColBERTAttError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    last = result.losses.get(result.step)
    console.print(
        f"step {result.step}/{config.max_steps}, last loss {last if last is None else round(last, 4)}, "
        f"{result.steps_per_s:.3f} steps/s"
    )
    if result.validation:
        console.print(f"validation: {json.dumps(result.validation[-1])}")
    if result.model_dir is not None:
        console.print(f"model: {result.model_dir}")
    if result.compact_dir is not None:
        size = sum(p.stat().st_size for p in result.compact_dir.iterdir()) / 1e6
        console.print(f"compact model: {result.compact_dir} ({size:.1f} MB)")


if __name__ == "__main__":
    app()
