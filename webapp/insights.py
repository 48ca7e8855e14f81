"""Knowledge-gap insight from the conversation log: which questions the assistant declined or answered only with
a grounding note, grouped by topic; 👎 answers with their comments; documents most and never cited; and how the
answer / decline rate moves over time. An editor reads it to see what to write next.

Topics: each gap question is embedded with the encoder the app already has (its token vectors, mean-pooled over
the real word pieces, normalised) and grouped by agglomerative clustering (average linkage, cosine distance below
`TOPIC_DISTANCE`). Mean-pooled MiniLM token vectors put paraphrases at cosine 0.5–0.75 and unrelated customer
questions below 0.25, so 0.5 keeps them apart with room on both sides. A topic is named after the document
retrieved first most often for its questions, and its most frequent content words.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from retriever.encoder import ColBERTAttEncoder
from retriever.index import MultiVectorIndex
from webapp.conversation_log import ConversationLog

TOPIC_DISTANCE = 0.5
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


def question_vectors(encoder: ColBERTAttEncoder, questions: list[str]) -> np.ndarray:
    """One unit vector per question: its token vectors mean-pooled over the real word pieces."""
    vectors = []
    for encoded in encoder.encode_documents(questions):
        pieces = encoder.token_strings(encoded.token_ids)
        keep = [i for i, piece in enumerate(pieces) if not SPECIAL.match(piece)] or list(range(len(pieces)))
        mean = np.asarray(encoded.vectors, dtype=np.float32)[keep].mean(axis=0)
        vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.asarray(vectors, dtype=np.float32)


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


def _topics(gaps: list[Gap], encoder: ColBERTAttEncoder, titles: DocumentTitles) -> list[Topic]:
    if not gaps:
        return []
    labels = cluster(question_vectors(encoder, [g.standalone_question or g.question for g in gaps]))
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


def gather(log: ConversationLog, index: MultiVectorIndex, encoder: ColBERTAttEncoder) -> Insights:
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
        topics=_topics(gaps, encoder, titles),
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
