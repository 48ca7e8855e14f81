"""Candidates from centroid lists (PLAID style), for compressed storage: no per-token FAISS index is kept.

Every stored token already carries the id of its nearest centroid (`compression.py`). The lists map each centroid
to the documents that have a token there, in CSR form (`offsets`, `slots`): one int32 per distinct
(centroid, document) pair instead of a vector per token. A query token probes its `nprobe` nearest centroids; a
document's approximate score is, for each query token, the best centroid similarity among the probed centroids it
appears in, summed over query tokens. The best `depth` documents go to exact re-ranking.
"""

from __future__ import annotations

import numpy as np


class CentroidLists:
    def __init__(self, n_centroids: int, offsets: np.ndarray, slots: np.ndarray):
        self.n_centroids = n_centroids
        self.offsets = offsets
        self.slots = slots
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # (centroids, slots) added since the CSR build
        self._removed: set[int] = set()

    @classmethod
    def empty(cls, n_centroids: int) -> CentroidLists:
        return cls(n_centroids, np.zeros(n_centroids + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))

    @staticmethod
    def document_pairs(centroid_ids: np.ndarray, slot: int) -> tuple[np.ndarray, np.ndarray]:
        centroids = np.unique(np.asarray(centroid_ids, dtype=np.int64))
        return centroids, np.full(len(centroids), slot, dtype=np.int32)

    def add_document(self, centroid_ids: np.ndarray, slot: int) -> None:
        self._pending.append(self.document_pairs(centroid_ids, slot))

    def remove(self, slots: list[int]) -> None:
        self._removed.update(int(s) for s in slots)

    def _compact(self) -> None:
        """Fold pending additions and removals into the CSR arrays (after changes, before the next search)."""
        if not self._pending and not self._removed:
            return
        centroids = np.repeat(np.arange(self.n_centroids, dtype=np.int64), np.diff(self.offsets))
        slots = np.asarray(self.slots, dtype=np.int32)
        if self._pending:
            centroids = np.concatenate([centroids, *(c for c, _ in self._pending)])
            slots = np.concatenate([slots, *(s for _, s in self._pending)])
        if self._removed:
            keep = ~np.isin(slots, np.fromiter(self._removed, dtype=np.int32))
            centroids, slots = centroids[keep], slots[keep]
        order = np.lexsort((slots, centroids))
        self.slots = slots[order]
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(centroids, minlength=self.n_centroids))])
        self._pending.clear()
        self._removed.clear()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self._compact()
        return self.offsets, self.slots

    def candidates(
        self,
        centroid_similarity: np.ndarray,
        nprobe: int,
        depth: int,
        allowed_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Up to `depth` document slots, best approximate score first.

        centroid_similarity: (n_query_tokens, n_centroids) cosines of query tokens to centroids.
        allowed_mask: boolean array indexed by slot (a metadata pre-filter), or None for all documents.
        """
        self._compact()
        n_query, n_centroids = centroid_similarity.shape
        nprobe = min(nprobe, n_centroids)
        probed = np.argpartition(-centroid_similarity, nprobe - 1, axis=1)[:, :nprobe]
        probed_similarity = np.take_along_axis(centroid_similarity, probed, axis=1)
        # Best centroid first within each query token, so that the first time a document is seen for a query token
        # is its best similarity for that token.
        order = np.argsort(-probed_similarity, axis=1)
        probed = np.take_along_axis(probed, order, axis=1).reshape(-1)
        probed_similarity = np.take_along_axis(probed_similarity, order, axis=1).reshape(-1)
        starts, ends = self.offsets[probed], self.offsets[probed + 1]
        sizes = ends - starts
        total = int(sizes.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        # Positions of every listed entry, without a Python loop over lists.
        entry_list = np.repeat(np.arange(len(probed)), sizes)
        within = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        slots = np.asarray(self.slots[starts[entry_list] + within], dtype=np.int64)
        similarity = probed_similarity[entry_list]
        query_token = entry_list // nprobe
        if allowed_mask is not None:
            inside = slots < len(allowed_mask)
            inside[inside] = allowed_mask[slots[inside]]
            slots, similarity, query_token = slots[inside], similarity[inside], query_token[inside]
            if len(slots) == 0:
                return np.zeros(0, dtype=np.int64)
        keys = slots * n_query + query_token
        _, first = np.unique(keys, return_index=True)  # stable: the first (best) entry per (document, query token)
        unique_slots, document = np.unique(slots[first], return_inverse=True)
        approximate = np.bincount(document, weights=similarity[first], minlength=len(unique_slots))
        best = np.argsort(-approximate, kind="stable")[:depth]
        return unique_slots[best]
