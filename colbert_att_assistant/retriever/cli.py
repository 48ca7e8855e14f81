"""Command line: build an index from a BEIR corpus.jsonl or a folder of documents, and search it.

python -m colbert_att_assistant.retriever build --corpus ../shared/datasets/scifact/corpus.jsonl --index-dir
indexes/scifact
python -m colbert_att_assistant.retriever build --folder knowledge_base/documents --index-dir indexes/kb
python -m colbert_att_assistant.retriever search --index-dir indexes/scifact "do statins lower cancer risk?"
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from rich.console import Console
from rich.table import Table

from colbert_att_assistant.retriever.beir import iter_corpus
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.index.streaming_build import build_compressed_index
from colbert_att_assistant.retriever.progress import encoding_progress
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import (
    AttentionStrategy,
    EncoderSettings,
    IndexSettings,
    StorageSettings,
    VectorFormat,
)

app = typer.Typer(help="ColBERT-Att retrieval: build and search attention-weighted late-interaction indexes.")
console = Console(stderr=True, soft_wrap=True)
FOLDER_SUFFIXES = (".md", ".txt")


def documents_from_folder(folder: Path) -> list[DocumentInput]:
    """Every .md / .txt file under `folder` as one document, id = its path relative to the folder."""
    documents = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix in FOLDER_SUFFIXES and p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ColBERTAttError(f"{path} is not UTF-8 text (byte {exc.start}); convert it or remove it.") from exc
        if text.strip():
            relative = path.relative_to(folder).as_posix()
            documents.append(DocumentInput(id=relative, text=text, metadata={"source_path": relative}))
    return documents


def _parse_filters(values: list[str]) -> MetadataFilters | None:
    rules = []
    for value in values:
        key, separator, expected = value.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"--filter takes key=value, got {value!r}.")
        rules.append(MetadataFilter(key=key, value=expected, operator=FilterOperator.EQ))
    return MetadataFilters(filters=rules) if rules else None


def _stored_as(index: MultiVectorIndex, document: DocumentInput) -> tuple[str, dict]:
    stored = index.get(document.id)
    return stored.text, stored.metadata


@app.command()
def build(
    index_dir: Annotated[Path, typer.Option(help="Where the index is written (created or updated).")],
    corpus: Annotated[Path | None, typer.Option(help="A BEIR corpus.jsonl file.")] = None,
    folder: Annotated[Path | None, typer.Option(help="A folder of .md / .txt documents.")] = None,
    limit: Annotated[int | None, typer.Option(help="Index only the first N documents.")] = None,
    model: Annotated[str | None, typer.Option(help="Model folder (default: bundled all-MiniLM-L6-v2).")] = None,
    attention: Annotated[AttentionStrategy, typer.Option(help="How A is read from attention.")] = (
        AttentionStrategy.CLS_ALL
    ),
    document_max_tokens: Annotated[int, typer.Option(help="Document length in word pieces.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.")] = 32,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    vector_format: Annotated[
        VectorFormat,
        typer.Option(
            "--vector-format",
            "--codec",
            help="Token storage: bfloat16 (exact) or residual_pq (50 bytes/token, large sets).",
        ),
    ] = VectorFormat.BFLOAT16,
    prune_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Drop this fraction of each document's lowest-attention tokens.")
    ] = 0.0,
) -> None:
    """Encode documents and write (or update in place) an index directory.

    A new residual_pq index is built streaming, in bounded memory, and resumes if interrupted (run it again).
    """
    if (corpus is None) == (folder is None):
        raise typer.BadParameter("Give exactly one of --corpus or --folder.")
    try:
        if corpus is not None:
            documents = [
                DocumentInput(id=d.id, text=d.full_text, metadata={"title": d.title}) for d in iter_corpus(corpus)
            ]
        else:
            assert folder is not None
            documents = documents_from_folder(folder)
        documents = documents[:limit] if limit is not None else documents
        settings = EncoderSettings(
            model_path=model,
            attention_strategy=attention,
            document_max_tokens=document_max_tokens,
            batch_size=batch_size,
            num_threads=threads,
        )
        encoder = ColBERTAttEncoder(settings)
        storage = StorageSettings(vector_format=vector_format, prune_fraction=prune_fraction)
        if vector_format == "residual_pq" and not (index_dir / "manifest.json").is_file():
            with encoding_progress(len(documents), "Encoding documents") as advance:
                manifest = build_compressed_index(
                    documents,
                    index_dir,
                    encoder,
                    IndexSettings(encoder=settings, storage=storage),
                    expected_tokens=sum(len(d.text.split()) for d in documents) * 4 // 3,
                    progress=advance,
                )
            console.print(
                f"Index {index_dir}: {manifest.document_count} documents, {manifest.token_count} tokens, residual_pq."
            )
            return
        if (index_dir / "manifest.json").is_file():
            index = MultiVectorIndex.load(index_dir, encoder=encoder)
            console.print(f"Updating {index_dir} ({len(index)} documents).")
        else:
            index = MultiVectorIndex(encoder, IndexSettings(encoder=settings, storage=storage))
        # Documents already indexed with the same text and metadata are not encoded again.
        changed = [d for d in documents if d.id not in index or _stored_as(index, d) != (d.text, d.metadata)]
        with encoding_progress(len(changed), "Encoding documents") as advance:
            index.upsert(changed, progress=advance)
        manifest = index.persist(index_dir)
    except ColBERTAttError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(
        f"Index {index_dir}: {manifest.document_count} documents, {manifest.token_count} tokens, "
        f"FAISS {manifest.faiss_kind}, generation {manifest.generation}."
    )


@app.command()
def convert(
    source_dir: Annotated[Path, typer.Option(help="A bfloat16 index.")],
    index_dir: Annotated[Path, typer.Option(help="Where the converted index is written (a new directory).")],
    vector_format: Annotated[
        VectorFormat, typer.Option("--vector-format", "--codec", help="Token storage.")
    ] = VectorFormat.RESIDUAL_PQ,
    prune_fraction: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.0,
) -> None:
    """Store an index's tokens another way (compressed and/or pruned) without encoding anything again."""
    try:
        if (index_dir / "manifest.json").is_file():
            raise ColBERTAttError(f"{index_dir} already holds an index; convert into a new directory.")
        source = MultiVectorIndex.load(source_dir)
        storage = StorageSettings(vector_format=vector_format, prune_fraction=prune_fraction)
        manifest = source.copy_with_storage(storage).persist(index_dir)
    except (ColBERTAttError, ValueError) as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    size = sum(entry.bytes for entry in manifest.files.values())
    console.print(
        f"Index {index_dir}: {manifest.document_count} documents, {manifest.token_count} tokens, "
        f"{manifest.vector_dtype}, {size / max(manifest.token_count, 1):.1f} bytes per token."
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question to search for.")],
    index_dir: Annotated[Path, typer.Option(help="An index built with `build`.")],
    top_k: Annotated[int, typer.Option(min=1, help="How many documents to show.")] = 10,
    scoring: Annotated[ScoringMode, typer.Option(help="Score used to rank.")] = ScoringMode.COLBERT_ATT,
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="Metadata key=value (repeatable).")] = None,
) -> None:
    """Search an index and print the best documents."""
    try:
        index = MultiVectorIndex.load(index_dir)
        hits = index.search(query, top_k=top_k, mode=scoring, filters=_parse_filters(filter_ or []))
    except ColBERTAttError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    table = Table("rank", "id", "score", "normalised", "text")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(
            str(rank),
            hit.id,
            f"{hit.score:.4f}",
            f"{hit.normalised_score:.3f}",
            hit.text[:100].replace("\n", " "),
        )
    Console().print(table)


@app.callback()
def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
