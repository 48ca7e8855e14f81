"""BM25 (bm25s) over a list of texts: the lexical baseline of the evaluations, and the ranker training uses to mine
hard negatives and pool candidate documents. Returns {document id: score} for the top k, the shape `ranx.Run` takes."""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import Stemmer


class BM25Baseline:
    def __init__(self, ids: Sequence[str], texts: Sequence[str], stemming: bool):
        self.ids = list(ids)
        self.stemmer = Stemmer.Stemmer("english") if stemming else None
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, show_progress=False))

    def search(self, query: str, k: int) -> dict[str, float]:
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, show_progress=False)
        if not tokens.ids or not tokens.ids[0]:
            return {}
        k = min(k, len(self.ids))
        positions, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return {self.ids[int(p)]: float(s) for p, s in zip(positions[0], scores[0], strict=True) if s > 0}
