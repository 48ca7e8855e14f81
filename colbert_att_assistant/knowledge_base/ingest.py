"""Build or update the knowledge-base index incrementally.

    python -m colbert_att_assistant.knowledge_base.ingest \
        --documents knowledge_base/documents --index-dir indexes/knowledge_base
    # the brand's documents, where the app reads them (ASSISTANT_*):
    python -m colbert_att_assistant.knowledge_base.ingest --from-settings

Chunk ids come from the chunk text, so an unchanged file yields the same ids and nothing is encoded; a changed
file re-encodes only its changed chunks; a deleted file's chunks leave the index. A file that cannot be read
is reported with its name (and line) and its previously indexed chunks are left exactly as they were.

An index that cannot be used (a damaged or missing file, a checksum that does not match, another encoder) is
rebuilt from the documents, with a warning in the log: it is derived data and every source is in the folder.
`load_or_rebuild` does this and returns the index ready to search. `index_brand_documents` is the app's start-up
step (and a benchmark's): the brand's documents into the index the assistant's settings name, the local one or a
Qdrant collection; `open_brand_index` opens that index without indexing, and says how to build it when there is none.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from llama_index.core.schema import TextNode
from rich.console import Console

from colbert_att_assistant.knowledge_base.chunking import DEFAULT_MAX_TOKENS, chunk_document
from colbert_att_assistant.knowledge_base.documents_io import DOCUMENTS_DIR, KnowledgeBaseError, read_documents
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.index import BaseMultiVectorIndex, DocumentInput
from colbert_att_assistant.retriever.index.factory import open_for_update, open_index
from colbert_att_assistant.retriever.index.manifest import MANIFEST_NAME
from colbert_att_assistant.retriever.index.qdrant_settings import POINTER_FILE, QdrantSettings
from colbert_att_assistant.retriever.progress import encoding_progress
from colbert_att_assistant.retriever.settings import EncoderSettings

if TYPE_CHECKING:
    from colbert_att_assistant.assistant.settings import AssistantSettings

logger = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)
DEFAULT_INDEX_DIR = Path("indexes/knowledge_base")


@dataclass
class IngestReport:
    added: int = 0
    removed: int = 0
    metadata_updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    rebuilt_because: str | None = None  # why the previous index could not be used, when it was rebuilt

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.metadata_updated)


def chunk_folder(folder: Path, encoder: ColBERTAttEncoder, max_tokens: int = DEFAULT_MAX_TOKENS):
    documents, errors, failed = read_documents(folder)

    def tokenize(text: str) -> list[int]:
        return encoder.tokenizer.encode(text, add_special_tokens=False)

    nodes: list[TextNode] = [node for document in documents for node in chunk_document(document, tokenize, max_tokens)]
    return nodes, errors, failed


def sync_index(
    index: BaseMultiVectorIndex, nodes: list[TextNode], failed_sources: set[str], progress=None
) -> IngestReport:
    """Make the index hold exactly `nodes`, except chunks of files that failed to read, which stay as they were."""
    report = IngestReport()
    wanted = {node.node_id: node for node in nodes}
    current = set(index.document_ids())
    stale = [
        chunk_id
        for chunk_id in current - wanted.keys()
        if index.get(chunk_id).metadata.get("source_path") not in failed_sources
    ]
    new_nodes = [node for chunk_id, node in wanted.items() if chunk_id not in current]
    for chunk_id in current & wanted.keys():
        if index.get(chunk_id).metadata != wanted[chunk_id].metadata:
            index.update_metadata(chunk_id, wanted[chunk_id].metadata)
            report.metadata_updated += 1
        else:
            report.unchanged += 1
    if new_nodes:
        index.add(
            [DocumentInput(id=n.node_id, text=n.get_content(), metadata=dict(n.metadata)) for n in new_nodes],
            progress=progress,
        )
    if stale:
        index.delete(stale)
    report.added, report.removed = len(new_nodes), len(stale)
    return report


def ingest(
    documents_dir: Path = DOCUMENTS_DIR,
    index_dir: Path = DEFAULT_INDEX_DIR,
    encoder: ColBERTAttEncoder | None = None,
    show_progress: bool = False,
    rebuild: bool = False,
) -> IngestReport:
    """Bring the index at `index_dir` in line with the folder; writes only when something changed."""
    return load_or_rebuild(documents_dir, index_dir, encoder, show_progress, rebuild)[1]


def load_or_rebuild(
    documents_dir: Path = DOCUMENTS_DIR,
    index_dir: Path = DEFAULT_INDEX_DIR,
    encoder: ColBERTAttEncoder | None = None,
    show_progress: bool = False,
    rebuild: bool = False,
    qdrant: QdrantSettings | None = None,
) -> tuple[BaseMultiVectorIndex, IngestReport]:
    """The knowledge-base index, in line with the folder and verified, ready to search: the local index at
    `index_dir`, or the Qdrant collection `qdrant` names (then `index_dir` holds only its pointer file).

    An index that cannot be used is rebuilt from the documents (logged, and said in `report.rebuilt_because`);
    `rebuild` rebuilds it regardless. Raises KnowledgeBaseError only when the documents themselves are missing.
    """
    if not documents_dir.exists():
        raise KnowledgeBaseError(
            f"Documents {documents_dir} do not exist: give a folder of .md documents or a BEIR corpus.jsonl."
        )
    encoder = encoder or ColBERTAttEncoder(EncoderSettings())
    opened = open_for_update(index_dir, encoder, qdrant, rebuild)
    index = opened.index
    rebuilt_because = "asked to rebuild" if rebuild and opened.existed else opened.unusable_because
    if opened.unusable_because:
        # The index is derived data and every source document is here: rebuild it.
        logger.warning("Rebuilding %s from the documents %s: %s", opened.where, documents_dir, rebuilt_because)
    nodes, errors, failed = chunk_folder(documents_dir, index.encoder)
    new_count = len({n.node_id for n in nodes} - set(index.document_ids()))
    with encoding_progress(new_count, "Encoding chunks") if show_progress else nullcontext(None) as advance:
        report = sync_index(index, nodes, failed, progress=advance)
    report.errors = errors
    report.rebuilt_because = rebuilt_because
    opened.save(changed=report.changed)
    return index, report


def assistant_encoder(settings: AssistantSettings) -> ColBERTAttEncoder:
    """The encoder the assistant searches with (its query length is the assistant's setting)."""
    return ColBERTAttEncoder(EncoderSettings(query_max_tokens=settings.retrieval.query_max_tokens))


def index_brand_documents(
    settings: AssistantSettings,
    encoder: ColBERTAttEncoder | None = None,
    show_progress: bool = False,
    rebuild: bool = False,
) -> tuple[BaseMultiVectorIndex, IngestReport]:
    """The brand's documents, indexed (only new or changed ones encoded) where the settings say: the local index in
    the brand's index folder, or the Qdrant collection of `retrieval.qdrant`. Files that cannot be read are logged
    and skipped; an index that cannot be used is rebuilt. Returns the index (ready for
    `Assistant.from_settings`) and what changed."""
    brand = settings.brand()
    index, report = load_or_rebuild(
        settings.documents_path(brand),
        settings.index_dir(brand),
        encoder=encoder or assistant_encoder(settings),
        show_progress=show_progress,
        rebuild=rebuild,
        qdrant=settings.retrieval.qdrant,
    )
    for error in report.errors:
        logger.warning("Knowledge base: %s", error)
    return index, report


def open_brand_index(settings: AssistantSettings, encoder: ColBERTAttEncoder | None = None) -> BaseMultiVectorIndex:
    """The brand's index as `index_brand_documents` left it, opened without indexing anything.

    Raises KnowledgeBaseError naming the command that builds it when there is none (an in-memory Qdrant collection
    never outlives its process: index it in the same process and pass the index on)."""
    brand = settings.brand()
    encoder = encoder or assistant_encoder(settings)
    qdrant = settings.retrieval.qdrant
    index_dir = settings.index_dir(brand)
    build = (
        "Build it with `python -m colbert_att_assistant.knowledge_base.ingest --from-settings` "
        "(the same ASSISTANT_* settings), or start "
        f"the app (`python app.py`), which indexes the documents {settings.documents_path(brand)} first."
    )
    if qdrant is not None:
        from colbert_att_assistant.retriever.index.qdrant_index import QdrantMultiVectorIndex, collection_exists

        if qdrant.in_memory:
            raise KnowledgeBaseError(
                f"{qdrant.describe()} is in memory: it holds nothing until this process indexes the documents. "
                "Call colbert_att_assistant.knowledge_base.ingest.index_brand_documents(settings) and pass its index, "
                "or give the Qdrant "
                "settings a folder (location) or a server (url)."
            )
        if not collection_exists(qdrant):
            raise KnowledgeBaseError(f"There is no {qdrant.describe()} yet. {build}")
        return QdrantMultiVectorIndex(encoder, None, qdrant)
    if not ((index_dir / MANIFEST_NAME).is_file() or (index_dir / POINTER_FILE).is_file()):
        raise KnowledgeBaseError(
            f"There is no knowledge-base index in {index_dir} yet. {build} For this folder alone: "
            "`python -m colbert_att_assistant.knowledge_base.ingest "
            f"--documents {settings.documents_path(brand)} --index-dir {index_dir}`."
        )
    return open_index(index_dir, encoder=encoder)


def main(
    documents: Annotated[Path, typer.Option(help="Folder of Markdown documents.")] = DOCUMENTS_DIR,
    index_dir: Annotated[Path, typer.Option(help="Index directory (created or updated).")] = DEFAULT_INDEX_DIR,
    rebuild: Annotated[bool, typer.Option(help="Encode every document again, even if the index looks sound.")] = False,
    from_settings: Annotated[
        bool,
        typer.Option(
            help="Index the brand's documents where the app reads them, as the ASSISTANT_* settings name them "
            "(brand profile, index folder, or a Qdrant collection); --documents and --index-dir are then ignored."
        ),
    ] = False,
) -> None:
    """Build or update the knowledge-base index from the documents folder (rebuilt if it cannot be used)."""
    try:
        if from_settings:
            from colbert_att_assistant.assistant.settings import AssistantSettings

            settings = AssistantSettings.load()
            index_dir = settings.index_dir(settings.brand())
            index, report = index_brand_documents(settings, show_progress=True, rebuild=rebuild)
            index.close()
        else:
            report = ingest(documents, index_dir, show_progress=True, rebuild=rebuild)
    except ColBERTAttError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    if report.rebuilt_because:
        console.print(f"Rebuilt from the documents: {report.rebuilt_because}", markup=False)
    for error in report.errors:
        console.print(f"[red]Skipped:[/red] {error}")
    console.print(
        f"{index_dir}: {report.added} chunks added, {report.removed} removed, "
        f"{report.metadata_updated} metadata updated, {report.unchanged} unchanged."
    )
    if report.errors:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    typer.run(main)
