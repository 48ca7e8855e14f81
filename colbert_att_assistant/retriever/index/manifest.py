"""The on-disk index format: a versioned manifest that names every data file of one generation.

Directory layout (generation N, written by `storage.write_generation`):

    manifest.json                 IndexManifest below; replaced atomically, last step of every write
    documents.gN.jsonl            one line per document: slot, id, n_words, n_tokens, text, metadata
    weights.gN.npy                (tokens,): attention weight A of each stored token (float32; float16 if compressed)
    token_ids.gN.npy              (tokens,): word-piece ids, for token-level explanations (int32; uint16 if compressed)

  vector format bfloat16 (`vector_dtype` "bfloat16"):
    vectors.gN.npy                bfloat16 bit patterns as int16 (tokens, dim): unit token vectors, in slot order
    faiss.gN.index                FAISS token index (ids are document slots) for candidate generation

  vector format residual_pq (`vector_dtype` "residual_pq", `compression.py`), about 50 + 4 bytes per token:
    centroid_ids.gN.npy           uint16 (tokens,): each token's nearest centroid
    codes.gN.npy                  uint8 (tokens, code bytes): product-quantised residual to that centroid
    codec_centroids.gN.npy        float32 (centroids, dim)
    codec_pq.gN.faiss             FAISS ProductQuantizer (the residual codebooks)
    codec_rotation.gN.npy         float32 (dim, dim): OPQ rotation applied to residuals before PQ (when pq_rotation)
    list_offsets.gN.npy           int64 (centroids + 1,): CSR offsets of the centroid lists
    list_slots.gN.npy             int32 (pairs,): documents with a token at each centroid (`centroid_candidates.py`)

Token arrays are memory-mapped when loaded, so an index larger than RAM can be searched: only the pages of the
documents being scored are read. The documents file is scanned once when loaded and its texts and metadata are then
read line by line as hits need them (`document_file.py`), so no passage text is held in memory.

Why bfloat16 and not float16: both take 2 bytes per value, but this CPU multiplies bfloat16 natively
(AVX512-BF16: 4 ms for 20 query tokens x 29K candidate tokens) while float16 must first be converted to float32
(17-29 ms for the same tokens, then a 12 ms float32 product). The winning token's cosine is then recomputed in
float32 (`scoring.py`), so only the choice of d_w sees bfloat16 rounding in the products.

Files of older generations are deleted only after the new manifest is in place, so a writer killed at any
point leaves the previous generation loadable.

Every data file's sha256 is in the manifest (format 2), checked when the index is loaded (`integrity.py` says
which files are hashed before `load` returns and which in the background). Format 1 manifests have no checksums:
they still load, with a warning, and the next write of the index adds them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from colbert_att_assistant.retriever.settings import IndexSettings

# 2: every data file carries its sha256. A reader of format 1 would refuse the new field as "not a valid index";
# the version number makes it say "newer format" instead.
FORMAT_VERSION = 2
FIRST_FORMAT_WITH_CHECKSUMS = 2
MANIFEST_NAME = "manifest.json"


class ModelIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    weights_sha256: str
    dim: int


class DataFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    bytes: int = Field(ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # None only in format 1 manifests


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    generation: int = Field(ge=1)
    created_at: datetime
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    model: ModelIdentity
    settings: IndexSettings
    vector_dtype: Literal["bfloat16", "residual_pq"] = "bfloat16"
    faiss_kind: Literal["flat", "ivf", "centroid_lists"]
    document_count: int = Field(ge=0)
    token_count: int = Field(ge=0)
    next_slot: int = Field(ge=0)
    files: dict[str, DataFile]

    @model_validator(mode="after")
    def _checksums_present(self) -> IndexManifest:
        if self.format_version >= FIRST_FORMAT_WITH_CHECKSUMS:
            missing = sorted(entry.name for entry in self.files.values() if entry.sha256 is None)
            if missing:
                raise ValueError(
                    f"format {self.format_version} needs a sha256 for every file, {', '.join(missing)} has none"
                )
        return self

    @property
    def has_checksums(self) -> bool:
        return all(entry.sha256 is not None for entry in self.files.values())
