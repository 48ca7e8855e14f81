"""Build a large compressed (residual_pq) index in bounded memory, resumably.

Documents are encoded, pruned and compressed batch by batch and their codes appended to files in
`<index dir>/.build/`; only one batch of vectors is ever in RAM. After every batch the appended files are
fsynced and `.build/state.json` records how far the build got, so a killed build resumes at the next batch
(`build_compressed_index` with the same documents in the same order). The codebooks are learnt once from the
first `storage.training_tokens` tokens and then frozen, as ColBERTv2 / PLAID do. At the end the files become one
generation of the normal index format (`manifest.py`), written with the usual atomic manifest switch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.index.centroid_candidates import CentroidLists
from colbert_att_assistant.retriever.index.compression import (
    ResidualCodec,
    centroid_id_dtype,
    default_centroid_count,
    prune_by_attention,
)
from colbert_att_assistant.retriever.index.manifest import MANIFEST_NAME, IndexManifest, ModelIdentity
from colbert_att_assistant.retriever.index.multivector_index import VECTOR_AFFECTING_FIELDS, DocumentInput
from colbert_att_assistant.retriever.index.storage import jsonl_writer, npy_rows_writer, npy_writer, write_generation
from colbert_att_assistant.retriever.settings import IndexSettings

WORK_DIRECTORY = ".build"
_ROWS_PER_COPY = 1 << 20  # rows copied at a time when the appended files become .npy files

ProgressCallback = Callable[[int], None]


class BuildState(BaseModel):
    """What a resumable build has durably written so far."""

    model_config = ConfigDict(extra="forbid")

    settings_sha256: str
    documents_done: int = 0
    tokens_done: int = 0
    pairs_done: int = 0
    documents_bytes: int = 0


def _settings_digest(settings: IndexSettings, model: ModelIdentity) -> str:
    """What the stored tokens depend on: a build may resume with other threads or batch size, not other vectors."""
    encoder = {name: getattr(settings.encoder, name) for name in VECTOR_AFFECTING_FIELDS}
    storage = settings.storage.model_dump()
    storage["codec"] = storage.pop("vector_format")  # the key's earlier name, so that interrupted builds still resume
    payload = json.dumps(
        [model.model_dump(), encoder, storage, settings.delta_length_words, settings.fixed_delta],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class _AppendFiles:
    """Raw binary files that grow by whole batches, truncated back to the last recorded state on resume."""

    def __init__(self, work: Path, dtypes: dict[str, tuple[np.dtype, tuple[int, ...]]]):
        self.work = work
        self.dtypes = dtypes

    def path(self, key: str) -> Path:
        return self.work / f"{key}.bin"

    def row_bytes(self, key: str) -> int:
        dtype, tail = self.dtypes[key]
        return dtype.itemsize * int(np.prod(tail, dtype=np.int64))

    def truncate(self, rows: dict[str, int]) -> None:
        for key, n in rows.items():
            with self.path(key).open("ab") as handle:
                handle.truncate(n * self.row_bytes(key))

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for key, array in arrays.items():
            dtype, _ = self.dtypes[key]
            with self.path(key).open("ab") as handle:
                handle.write(np.ascontiguousarray(array, dtype=dtype).tobytes())
                handle.flush()
                os.fsync(handle.fileno())

    def read(self, key: str, rows: int) -> np.ndarray:
        dtype, tail = self.dtypes[key]
        if rows == 0:
            return np.zeros((0, *tail), dtype=dtype)
        return np.memmap(self.path(key), dtype=dtype, mode="r", shape=(rows, *tail))


def _write_state(work: Path, state: BuildState) -> None:
    temporary = work / "state.json.tmp"
    temporary.write_text(state.model_dump_json(), encoding="utf-8")
    os.replace(temporary, work / "state.json")


def _chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(array), _ROWS_PER_COPY):
        yield np.asarray(array[start : start + _ROWS_PER_COPY])


def centroid_lists_from_pairs(pairs: np.ndarray, n_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, slots) from (centroid, slot) rows, by a two-pass counting sort over chunks (bounded memory).

    Rows must come in slot order; each list then holds its slots in increasing order.
    """
    counts = np.zeros(n_centroids, dtype=np.int64)
    for chunk in _chunks(pairs):
        counts += np.bincount(chunk[:, 0], minlength=n_centroids)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    slots = np.zeros(int(offsets[-1]), dtype=np.int32)
    filled = np.zeros(n_centroids, dtype=np.int64)
    for chunk in _chunks(pairs):
        order = np.argsort(chunk[:, 0], kind="stable")
        centroids = chunk[order, 0].astype(np.int64)
        group_start = np.searchsorted(centroids, centroids, side="left")
        rank = np.arange(len(centroids)) - group_start
        slots[offsets[centroids] + filled[centroids] + rank] = chunk[order, 1]
        filled += np.bincount(centroids, minlength=n_centroids)
    return offsets, slots


def build_compressed_index(
    documents: Iterable[DocumentInput],
    directory: str | Path,
    encoder: ColBERTAttEncoder,
    settings: IndexSettings,
    batch_documents: int = 256,
    expected_tokens: int | None = None,
    progress: ProgressCallback | None = None,
) -> IndexManifest:
    """Encode `documents` into a new residual_pq index at `directory` (resuming an interrupted build there).

    The number of centroids is `settings.storage.centroids`, else chosen from `expected_tokens` (else from the
    training sample, which undercounts a corpus larger than the sample).
    """
    directory = Path(directory)
    settings = settings.model_copy(update={"encoder": encoder.settings})
    storage = settings.storage
    if storage.vector_format != "residual_pq":
        raise ColBERTAttError(
            "build_compressed_index writes residual_pq indexes; set storage.vector_format='residual_pq'."
        )
    if (directory / MANIFEST_NAME).is_file():
        raise ColBERTAttError(f"{directory} already holds an index; stream-build into a new directory.")
    model = ModelIdentity(name=encoder.model_name, weights_sha256=encoder.weights_sha256, dim=encoder.dim)
    work = directory / WORK_DIRECTORY
    work.mkdir(parents=True, exist_ok=True)
    digest = _settings_digest(settings, model)
    state = BuildState(settings_sha256=digest)
    if (work / "state.json").is_file():
        state = BuildState.model_validate_json((work / "state.json").read_text(encoding="utf-8"))
        if state.settings_sha256 != digest:
            raise ColBERTAttError(
                f"{work} holds an interrupted build with other settings or another model. "
                f"Delete {work} to start over, or resume with the same settings."
            )

    stream = iter(documents)
    codec_files = (work / "codec_centroids.npy", work / "codec_pq.faiss")
    rotation_file = work / "codec_rotation.npy"
    # Batches encoded for the codebooks' training sample, indexed first so that none is encoded twice
    # (the sample is bounded by storage.training_tokens, so holding them keeps memory bounded).
    sampled: list[tuple[list[DocumentInput], list[EncodedText]]] = []
    if codec_files[0].is_file() and codec_files[1].is_file():
        codec = ResidualCodec.read(*codec_files, rotation_file if storage.pq_rotation else None)
    else:
        sampled_tokens = 0
        while sampled_tokens < storage.training_tokens:
            batch = list(itertools.islice(stream, batch_documents))
            if not batch:
                break
            sampled.append((batch, encoder.encode_documents([d.text for d in batch])))
            sampled_tokens += sum(len(item.vectors) for item in sampled[-1][1])
        if not sampled:
            raise ColBERTAttError("No documents to index.")
        vectors = np.concatenate([item.vectors for _, encoded in sampled for item in encoded])
        n_centroids = storage.centroids or default_centroid_count(
            expected_tokens or len(vectors), storage.training_tokens
        )
        codec = ResidualCodec.train_for(storage, vectors, n_centroids)
        del vectors
        if codec.rotation is not None:  # written before the two files whose presence means "codec saved"
            np.save(rotation_file, codec.rotation)
        np.save(codec_files[0], codec.centroids)
        codec.write_codebooks(codec_files[1])

    token_id_dtype = np.dtype(np.uint16) if len(encoder.tokenizer) <= 65536 else np.dtype(np.int32)
    files = _AppendFiles(
        work,
        {
            "centroid_ids": (centroid_id_dtype(codec.n_centroids), ()),
            "codes": (np.dtype(np.uint8), (int(codec.product_quantizer.code_size),)),
            "weights": (np.dtype(np.float16), ()),
            "token_ids": (token_id_dtype, ()),
            "pairs": (np.dtype(np.int32), (2,)),
        },
    )
    token_keys = ("centroid_ids", "codes", "weights", "token_ids")
    files.truncate({**dict.fromkeys(token_keys, state.tokens_done), "pairs": state.pairs_done})
    documents_path = work / "documents.jsonl"
    with documents_path.open("ab") as handle:
        handle.truncate(state.documents_bytes)
    # A fresh codec means a fresh build (the codebooks are saved before any batch), so nothing is skipped then.
    stream = itertools.islice(stream, state.documents_done, None)
    if progress is not None and state.documents_done:
        progress(state.documents_done)

    def batches() -> Iterator[tuple[list[DocumentInput], list[EncodedText]]]:
        yield from sampled
        while batch := list(itertools.islice(stream, batch_documents)):
            yield batch, encoder.encode_documents([d.text for d in batch])

    seen_ids: set[str] = set()
    for batch, encoded in batches():
        kept = [prune_by_attention(item.weights, storage.prune_fraction) for item in encoded]
        codes = codec.encode_each([item.vectors[keep] for item, keep in zip(encoded, kept, strict=True)])
        columns: dict[str, list[np.ndarray]] = {key: [] for key in (*token_keys, "pairs")}
        lines = []
        for offset, (document, item, keep, compressed) in enumerate(zip(batch, encoded, kept, codes, strict=True)):
            if document.id in seen_ids:
                raise ColBERTAttError(f"Document id {document.id!r} appears twice; ids must be unique.")
            seen_ids.add(document.id)
            slot = state.documents_done + offset
            columns["centroid_ids"].append(compressed.centroid_ids)
            columns["codes"].append(compressed.codes)
            columns["weights"].append(item.weights[keep])
            columns["token_ids"].append(item.token_ids[keep])
            centroids, slots = CentroidLists.document_pairs(compressed.centroid_ids, slot)
            columns["pairs"].append(np.stack([centroids.astype(np.int32), slots], axis=1))
            lines.append(
                {
                    "slot": slot,
                    "id": document.id,
                    "n_words": item.n_words,
                    "n_tokens": len(keep),
                    "text": document.text,
                    "metadata": document.metadata,
                }
            )
        files.append({key: np.concatenate(parts) for key, parts in columns.items()})
        payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        with documents_path.open("ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        state.documents_done += len(batch)
        state.tokens_done += sum(line["n_tokens"] for line in lines)
        state.pairs_done += sum(len(p) for p in columns["pairs"])
        state.documents_bytes += len(payload)
        _write_state(work, state)
        if progress is not None:
            progress(len(batch))

    return _finish(directory, work, files, token_keys, state, settings, model, codec, documents_path)


def _finish(
    directory: Path,
    work: Path,
    files: _AppendFiles,
    token_keys: tuple[str, ...],
    state: BuildState,
    settings: IndexSettings,
    model: ModelIdentity,
    codec: ResidualCodec,
    documents_path: Path,
) -> IndexManifest:
    offsets, list_slots = centroid_lists_from_pairs(files.read("pairs", state.pairs_done), codec.n_centroids)

    def lines() -> Iterator[dict]:
        with documents_path.open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def token_writer(key: str):
        dtype, tail = files.dtypes[key]
        return npy_rows_writer(lambda: _chunks(files.read(key, state.tokens_done)), state.tokens_done, dtype, tail)

    writers = {
        **codec.file_writers(),
        "list_offsets": ("npy", npy_writer(offsets, np.int64)),
        "list_slots": ("npy", npy_writer(list_slots, np.int32)),
        "documents": ("jsonl", jsonl_writer(lines())),
        **{key: ("npy", token_writer(key)) for key in token_keys},
    }
    manifest = IndexManifest(
        generation=1,
        created_at=datetime.now(UTC),
        model=model,
        settings=settings,
        vector_dtype="residual_pq",
        faiss_kind="centroid_lists",
        document_count=state.documents_done,
        token_count=state.tokens_done,
        next_slot=state.documents_done,
        files={},
    )
    manifest = write_generation(directory, manifest, writers)
    shutil.rmtree(work)
    return manifest
