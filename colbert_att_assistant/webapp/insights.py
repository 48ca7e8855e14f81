"""Knowledge-gap insight from the conversation log: which questions the assistant declined or answered only with
a grounding note, grouped by topic; 👎 answers with their comments; documents most and never cited; and how the
answer / decline rate moves over time. An editor reads it to see what to write next.

Topics: each gap question is described by two unit vectors, joined: the question's token vectors from the encoder
the app already has, pooled with the encoder's own attention weights A (salient words count more than "how do I"),
and the documents retrieved for it, weighted by score. Agglomerative clustering (average linkage) groups them below
cosine distance `TOPIC_DISTANCE`. On the 150 labelled questions with a gold document
(benchmarks/gap_topics.py) plain mean pooling grouped by phrasing ("How do I clean a sequinned dress" with "How do
I clean a leather sofa"): pair precision 0.40, recall 0.05; attention pooling 0.60 / 0.10; with the retrieved
documents 0.56 / 0.34 at 0.5. A topic is named after the document retrieved first most often for its questions,
and its most frequent content words.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.webapp.conversation_log import ConversationLog

TOPIC_DISTANCE = 0.5
# Each of the two halves of a gap's description (question, retrieved documents) is a unit vector.
HALVES = 2
SPECIAL = re.compile(r"^\[(CLS|SEP|PAD|MASK|unused\d+)\]$")
WORD = re.compile(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'-]+")
# Not questions: messages the assistant could not read, and statements it acknowledged.
NOT_QUESTIONS = {"invalid_message"}
NOT_QUESTION_PATHS = {"invalid", "acknowledged"}


class Retrieved(BaseModel):
    node_id: str
    document_id: str
    title: str
    score: float


class Gap(BaseModel):
    turn_id: int
    created: float
    mode: str
    kind: str  # declined | noted
    reason: str
    question: str
    standalone_question: str
    retrieved: list[Retrieved]
    topic: int = -1


class Topic(BaseModel):
    id: int
    label: str
    gaps: list[Gap]
    documents: list[tuple[str, str, int]]  # (document_id, title, times retrieved)


class DownVote(BaseModel):
    turn_id: int | None
    created: float
    question: str
    answer: str
    comment: str | None


class DayCount(BaseModel):
    day: str
    answered: int
    noted: int
    declined: int

    @property
    def total(self) -> int:
        return self.answered + self.noted + self.declined


class Insights(BaseModel):
    questions: int
    answered: int
    noted: int
    declined: int
    topics: list[Topic]
    down_votes: list[DownVote]
    most_cited: list[tuple[str, str, int]]  # (document_id, title, citations)
    never_cited: list[tuple[str, str, str]]  # (document_id, title, audience)
    days: list[DayCount]


def _day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _is_question(turn: dict) -> bool:
    return turn["abstain_reason"] not in NOT_QUESTIONS and (turn.get("answer_path") or "") not in NOT_QUESTION_PATHS


def _kind(turn: dict) -> str:
    if turn["abstained"]:
        return "declined"
    return "noted" if turn.get("grounding_note") else "answered"


class DocumentTitles:
    """Document id → (title, audience), from the index's chunks."""

    def __init__(self, index: MultiVectorIndex):
        self.by_document: dict[str, tuple[str, str]] = {}
        self.chunk_document: dict[str, str] = {}
        for node_id in index.document_ids():
            metadata = index.get(node_id).metadata
            document_id = str(metadata.get("document_id", node_id))
            self.chunk_document[node_id] = document_id
            self.by_document.setdefault(
                document_id, (str(metadata.get("title", document_id)), str(metadata.get("audience", "")))
            )

    def title(self, document_id: str) -> str:
        return self.by_document.get(document_id, (document_id, ""))[0]


class VectorCache:
    """Question → vector, so that reloading the page encodes only the questions asked since (bounded)."""

    def __init__(self, limit: int = 20_000):
        self.limit = limit
        self.vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def get_many(self, encoder: ColBERTAttEncoder, questions: list[str]) -> np.ndarray:
        with self._lock:
            return self._get_many(encoder, questions)

    def _get_many(self, encoder: ColBERTAttEncoder, questions: list[str]) -> np.ndarray:
        fresh = list(dict.fromkeys(q for q in questions if q not in self.vectors))
        if len(self.vectors) + len(fresh) > self.limit:
            self.vectors.clear()
            fresh = list(dict.fromkeys(questions))
        if fresh:
            self.vectors.update(zip(fresh, question_vectors(encoder, fresh), strict=True))
        return np.asarray([self.vectors[q] for q in questions], dtype=np.float32)


def question_vectors(encoder: ColBERTAttEncoder, questions: list[str]) -> np.ndarray:
    """One unit vector per question: its token vectors over the real word pieces, weighted by their attention A."""
    vectors = []
    for encoded in encoder.encode_documents(questions):
        pieces = encoder.token_strings(encoded.token_ids)
        keep = [i for i, piece in enumerate(pieces) if not SPECIAL.match(piece)] or list(range(len(pieces)))
        weights = np.clip(np.asarray(encoded.weights, dtype=np.float64)[keep], 0.0, None)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(keep), 1.0 / len(keep))
        pooled = (np.asarray(encoded.vectors, dtype=np.float64)[keep] * weights[:, None]).sum(axis=0)
        vectors.append(pooled / max(float(np.linalg.norm(pooled)), 1e-12))
    return np.asarray(vectors, dtype=np.float32)


def retrieved_vectors(retrieved: list[list[tuple[str, float]]]) -> np.ndarray:
    """One unit vector per question over all documents: the scores of those retrieved for it (zeros if none)."""
    documents = {document: i for i, document in enumerate(sorted({d for found in retrieved for d, _ in found}))}
    vectors = np.zeros((len(retrieved), max(1, len(documents))), dtype=np.float32)
    for row, found in enumerate(retrieved):
        for document, score in found:
            vectors[row, documents[document]] += max(score, 0.0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def gap_vectors(questions: np.ndarray, retrieved: list[list[tuple[str, float]]]) -> np.ndarray:
    return np.hstack([questions, retrieved_vectors(retrieved)]) / np.sqrt(HALVES)


def cluster(vectors: np.ndarray, distance: float = TOPIC_DISTANCE) -> list[int]:
    if len(vectors) < 2:
        return [0] * len(vectors)
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average")
    return [int(label) for label in model.fit_predict(vectors)]


def _content_words(texts: list[str], top: int = 3) -> list[str]:
    counts = Counter(
        word.lower() for text in texts for word in WORD.findall(text) if word.lower() not in ENGLISH_STOP_WORDS
    )
    return [word for word, _ in counts.most_common(top)]


def _topics(gaps: list[Gap], encoder: ColBERTAttEncoder, titles: DocumentTitles, cache: VectorCache) -> list[Topic]:
    if not gaps:
        return []
    questions = cache.get_many(encoder, [g.standalone_question or g.question for g in gaps])
    labels = cluster(gap_vectors(questions, [[(r.document_id, r.score) for r in g.retrieved] for g in gaps]))
    groups: dict[int, list[Gap]] = {}
    for gap, label in zip(gaps, labels, strict=True):
        groups.setdefault(label, []).append(gap)
    topics = []
    # Largest first; ties by the most recent question.
    ordered = sorted(groups.values(), key=lambda group: (-len(group), -max(g.created for g in group)))
    for number, group in enumerate(ordered, start=1):
        for gap in group:
            gap.topic = number
        retrieved = Counter(r.document_id for gap in group for r in gap.retrieved)
        first = Counter(gap.retrieved[0].document_id for gap in group if gap.retrieved)
        words = _content_words([g.standalone_question or g.question for g in group])
        name = titles.title(first.most_common(1)[0][0]) if first else "No document retrieved"
        label = f"{name} — {', '.join(words)}" if words else name
        documents = [(doc, titles.title(doc), count) for doc, count in retrieved.most_common(5)]
        topics.append(Topic(id=number, label=label, gaps=sorted(group, key=lambda g: -g.created), documents=documents))
    return topics


def gather(
    log: ConversationLog, index: MultiVectorIndex, encoder: ColBERTAttEncoder, cache: VectorCache | None = None
) -> Insights:
    titles = DocumentTitles(index)
    turns = [turn for turn in log.rows("turns") if _is_question(turn)]
    gaps, days, cited = [], {}, Counter()
    for turn in turns:
        kind = _kind(turn)
        day = days.setdefault(_day(turn["created"]), {"answered": 0, "noted": 0, "declined": 0})
        day[kind] += 1
        for node_id in json.loads(turn["cited"] or "[]"):
            cited[titles.chunk_document.get(node_id, node_id)] += 1
        if kind == "answered":
            continue
        retrieved = [
            Retrieved(
                node_id=item["node_id"],
                document_id=item["document_id"],
                title=titles.title(item["document_id"]),
                score=float(item.get("score") or 0.0),
            )
            for item in json.loads(turn["retrieved"] or "[]")
        ]
        gaps.append(
            Gap(
                turn_id=turn["id"],
                created=turn["created"],
                mode=turn["mode"],
                kind=kind,
                reason=(turn["abstain_reason"] or "declined") if kind == "declined" else turn["grounding_note"],
                question=turn["question"],
                standalone_question=turn["standalone_question"],
                retrieved=retrieved,
            )
        )
    by_turn = {turn["id"]: turn for turn in log.rows("turns")}
    down_votes = [
        DownVote(
            turn_id=row["turn_id"],
            created=row["created"],
            question=by_turn.get(row["turn_id"], {}).get("question", ""),
            answer=by_turn.get(row["turn_id"], {}).get("answer", row.get("answer") or ""),
            comment=row.get("comment"),
        )
        for row in _latest_feedback(log.rows("feedback"))
        if not row["helpful"]
    ]
    counts = Counter(_kind(turn) for turn in turns)
    return Insights(
        questions=len(turns),
        answered=counts["answered"],
        noted=counts["noted"],
        declined=counts["declined"],
        topics=_topics(gaps, encoder, titles, cache or VectorCache()),
        down_votes=sorted(down_votes, key=lambda vote: -vote.created),
        most_cited=[(doc, titles.title(doc), count) for doc, count in cited.most_common(10)],
        never_cited=sorted(
            (doc, title, audience) for doc, (title, audience) in titles.by_document.items() if doc not in cited
        ),
        days=[DayCount(day=day, **values) for day, values in sorted(days.items())],
    )


def _latest_feedback(rows: list[dict]) -> list[dict]:
    """One row per answer: a client may press 👎 and then send a comment; the latest says what they meant."""
    latest: dict[object, dict] = {}
    for row in rows:
        key = row["turn_id"] if row["turn_id"] is not None else ("row", row["id"])
        previous = latest.get(key)
        if previous is not None and not row.get("comment") and previous.get("comment") and not row["helpful"]:
            continue  # a later bare 👎 does not erase the comment sent with an earlier one
        latest[key] = row
    return list(latest.values())
