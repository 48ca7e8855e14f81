"""FAISS candidate generation: each query token's nearest document tokens name candidate documents.

Every token vector is added with its document's slot as the FAISS id, so a search returns document slots
directly and `remove_ids(slot)` drops all of a document's tokens. Small collections use an exact flat index;
large ones an IVF index whose codes are 4-bit product-quantised sub-vectors, scanned with SIMD lookup tables
(FAISS "fast scan"), or 8-bit scalar-quantised (candidates only: final scores are exact).

On SciFact (1.2M tokens, benchmarks/RESULTS.md) the 4-bit codes are an eighth of the 8-bit ones and a query's
FAISS search takes half the time; their coarser similarities are made up for by twice the neighbours per query
token, which keeps more of the exhaustive top 10 than the 8-bit codes did.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.settings import CandidateSettings

FaissKind = Literal["flat", "ivf"]


def choose_kind(settings: CandidateSettings, token_count: int) -> FaissKind:
    if settings.faiss_kind != "auto":
        return settings.faiss_kind  # type: ignore[return-value]
    return "ivf" if token_count > settings.flat_max_tokens else "flat"


def default_nlist(token_count: int) -> int:
    """About 2 * sqrt(tokens), rounded to a power of two, between 64 and 65,536."""
    target = 2.0 * math.sqrt(max(token_count, 1))
    return int(min(65536, max(64, 2 ** round(math.log2(target)))))


def pq_subvectors(dim: int, settings: CandidateSettings) -> int:
    """The pq4_fastscan sub-vector count for `dim`; a clear error where it cannot split the vectors."""
    subvectors = settings.ivf_pq_subvectors or max(1, dim // 4)
    if dim % subvectors:
        raise ColBERTAttError(
            f"ivf_pq_subvectors {subvectors} does not divide the vector size {dim}: pick a divisor of {dim} "
            "(or leave it unset for dim / 4)."
        )
    return subvectors


def _ivf_index(dim: int, nlist: int, settings: CandidateSettings) -> faiss.IndexIVF:
    quantizer = faiss.IndexFlatIP(dim)
    if settings.ivf_codes == "sq8":
        return faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    return faiss.IndexIVFPQFastScan(quantizer, dim, nlist, pq_subvectors(dim, settings), 4, faiss.METRIC_INNER_PRODUCT)


class TokenCandidateIndex:
    def __init__(self, index: faiss.Index, kind: FaissKind, nprobe: int):
        self.index = index
        self.kind = kind
        self.nprobe = nprobe

    @classmethod
    def build(
        cls, dim: int, settings: CandidateSettings, vectors: np.ndarray, slots: np.ndarray, seed: int = 1234
    ) -> TokenCandidateIndex:
        """A new index over `vectors` (tokens, dim) whose rows belong to document `slots` (tokens,)."""
        kind = choose_kind(settings, len(vectors))
        if kind == "flat":
            index: faiss.Index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        else:
            nlist = settings.ivf_nlist or default_nlist(len(vectors))
            index = _ivf_index(dim, nlist, settings)
            # k-means on a fixed-seed sample, few iterations: the lists only need to be good enough for
            # candidates, and full k-means over millions of tokens takes minutes on two cores.
            rng = np.random.default_rng(seed)
            sample_size = min(len(vectors), 40 * nlist)
            sample = vectors[np.sort(rng.choice(len(vectors), sample_size, replace=False))]
            index.cp.seed = seed
            index.cp.niter = 10
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        candidate_index = cls(index, kind, settings.ivf_nprobe)
        candidate_index.add(vectors, slots)
        return candidate_index

    @classmethod
    def read(cls, path: Path, nprobe: int) -> TokenCandidateIndex:
        index = faiss.read_index(str(path))
        kind: FaissKind = "ivf" if isinstance(index, faiss.IndexIVF) else "flat"
        return cls(index, kind, nprobe)

    @property
    def codes(self) -> str:
        """What each token is stored as: "flat" (float32), "sq8" or "pq4_fastscan"."""
        if isinstance(self.index, faiss.IndexIVFPQFastScan):
            return "pq4_fastscan"
        return "sq8" if isinstance(self.index, faiss.IndexIVFScalarQuantizer) else "flat"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, slots: np.ndarray) -> None:
        if len(vectors):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(slots, dtype=np.int64)
            )

    def remove(self, slots: list[int]) -> None:
        if not slots:
            return
        packed = isinstance(self.index, faiss.IndexIVFFastScan)
        sizes_before = _list_sizes(self.index) if packed else None
        self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(slots, dtype=np.int64)))
        if sizes_before is not None:
            changed = np.flatnonzero(_list_sizes(self.index) != sizes_before)
            _clear_unused_block_slots(self.index, changed)

    def search(
        self, query_vectors: np.ndarray, k: int, allowed_slots: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, slots), each (n_query_tokens, k); slot -1 where fewer than k tokens qualify."""
        selector = faiss.IDSelectorBatch(allowed_slots.astype(np.int64)) if allowed_slots is not None else None
        if self.kind == "ivf":
            params: faiss.SearchParameters = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
        similarities, slots = self.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k, params=params)
        return similarities, slots


def _list_sizes(index: faiss.IndexIVF) -> np.ndarray:
    invlists = index.invlists
    return np.array([invlists.list_size(number) for number in range(invlists.nlist)], dtype=np.int64)


def _clear_unused_block_slots(index: faiss.IndexIVFFastScan, lists: np.ndarray) -> None:
    """Zero the unused slots of each list's last block of packed 4-bit codes.

    FAISS (1.15) leaves the codes of removed tokens in the last block's unused slots, and packs the codes of tokens
    added later into those slots with a bitwise OR, so one added after a removal was found by its own vector a
    fifth less often. The block is rewritten from its live codes into zeroed memory."""
    invlists = faiss.downcast_InvertedLists(index.invlists)
    packer, per_block, block_size = invlists.packer, invlists.n_per_block, invlists.block_size
    for number in lists:
        size = invlists.list_size(int(number))
        live = size % per_block
        if not live:
            continue
        blocks = faiss.rev_swig_ptr(invlists.get_codes(int(number)), -(-size // per_block) * block_size)
        last = blocks[(size // per_block) * block_size :].reshape(1, block_size)
        codes = [packer.unpack_1(last, position) for position in range(live)]
        last[:] = 0
        for position, code in enumerate(codes):
            packer.pack_1(code, position, last)
