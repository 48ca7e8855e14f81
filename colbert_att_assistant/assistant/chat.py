"""The assistant: a conversation turn in, a cited answer (streamed) or an honest "I don't know" out.

One turn, evidence first:
1. check the message;
2. join a follow-up with the client's previous message, or a question with the statement before it (`follow_up.py`);
   split a message that asks several things into its questions (`question_parts.py`);
3. retrieve (customer mode sees only `audience: public` chunks, enforced by the retriever's metadata filter), and
   search the client's own questions alone too (`own_questions`), adding each one's best passage when the whole
   intent missed it;
4. pick the few sentences, list items and table rows of those passages that the ColBERT-Att token alignment finds
   for the question (`evidence.py`); abstain when retrieval or evidence is below its calibrated threshold;
5. prompt with that evidence only (`prompts.py`) and stream the draft through `answer_check.py`: a sentence is
   shown only once its citations, its numbers and its support by the cited passages are checked;
6. if nothing of the draft survives, answer with the evidence itself, quoted and cited (an extractive answer is
   grounded by construction): always when the draft drifted from its sources, and only above a higher calibrated
   evidence threshold when the model replied that the sources do not say; otherwise abstain with the handoff.

The quoted style (the default) stops after step 4 and quotes the best lines; the judged style asks the LLM, line by
line, whether a candidate line answers (`line_judge.py`), quotes by its ranking and abstains when none does.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from pydantic import BaseModel, Field

from colbert_att_assistant.assistant.abstention import AbstentionCalibration
from colbert_att_assistant.assistant.answer_check import DraftChecker
from colbert_att_assistant.assistant.answerability import SPREAD_DEPTH, score_spread, spread_adjusted
from colbert_att_assistant.assistant.brand import BrandProfile
from colbert_att_assistant.assistant.citations import NumberMismatch
from colbert_att_assistant.assistant.evidence import Evidence, EvidenceUnit, evidence_for, with_context
from colbert_att_assistant.assistant.explanations import SourceExplanation, explain_hit
from colbert_att_assistant.assistant.follow_up import standalone_question
from colbert_att_assistant.assistant.grounding_note import grounding_note
from colbert_att_assistant.assistant.line_judge import LineJudge
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.memory import SessionMemory
from colbert_att_assistant.assistant.prompts import PromptSource, answer_messages
from colbert_att_assistant.assistant.question_parts import question_parts
from colbert_att_assistant.assistant.settings import AnswerStyle, AssistantSettings, Audience
from colbert_att_assistant.assistant.table_rows import rows_named_by
from colbert_att_assistant.assistant.unknown_words import weakest_unknown_word
from colbert_att_assistant.assistant.vocabulary import DocumentVocabulary
from colbert_att_assistant.grounding import GroundingJudge
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.index import BaseMultiVectorIndex, SearchHit
from colbert_att_assistant.retriever.scoring import ScoringMode

logger = logging.getLogger(__name__)

AbstainReason = Literal["invalid_message", "weak_retrieval", "weak_evidence", "no_sources", "model_declined",
                        "unsupported_answer", "no_line_answers", "unknown_subject"]  # fmt: skip
# How the text shown was made: by the model (checked sentence by sentence), quoted from the evidence, or neither.
AnswerPath = Literal["generated", "extractive", "abstained", "invalid"]
# Shown to staff under lines quoted although they match the question weakly (customers get the handoff instead).
WEAK_MATCH_NOTE = (
    "Weak match: these are the closest lines of the documents, but none clearly answers the question. "
    "Check the sources before relying on them; the documents may not cover it."
)
PUBLIC_ONLY = MetadataFilters(filters=[MetadataFilter(key="audience", value="public", operator=FilterOperator.EQ)])


class Citation(BaseModel):
    number: int
    node_id: str
    document_id: str
    title: str
    section: str
    source_path: str
    audience: str
    score: float
    text: str
    explanation: SourceExplanation | None = Field(
        default=None, description="Staff mode only: why the passage was found (matched words, token matches)."
    )


class AssistantAnswer(BaseModel):
    """One answered turn: what the chat widget shows and what the feedback log keeps."""

    text: str
    abstained: bool
    abstain_reason: AbstainReason | None = None
    unknown_word: str | None = Field(
        default=None, description="The message's word the documents never use that the passages match least."
    )
    unknown_word_similarity: float | None = Field(
        default=None, description="That word's mean best cosine in the passages (1.0: every word is known)."
    )
    named_rows: int = Field(
        default=0, description='Table rows the message named by a value it gave ("UK 8"), quoted with the answer.'
    )
    answer_path: AnswerPath = "generated"
    weak_match: bool = Field(
        default=False,
        description="Staff mode: quoted although below a gate (retrieval, evidence, quote), noted as a weak match.",
    )
    citations: list[Citation] = Field(default_factory=list, description="Sources the answer cites, in order.")
    sources: list[Citation] = Field(default_factory=list, description="Every source retrieved for the turn.")
    evidence: list[str] = Field(default_factory=list, description="The lines of the sources the model was shown.")
    question: str
    standalone_question: str
    audience: Audience
    top_score: float | None = None
    evidence_score: float | None = None
    score_spread: float | None = Field(
        default=None,
        description="Standard deviation over mean of the top retrieval scores: how much the best passages stand out.",
    )
    judge_log_odds: float | None = Field(
        default=None, description="Judged style: the LLM's log-odds that the best-judged line answers the question."
    )
    removed_citations: list[int] = Field(default_factory=list, description="Invented source numbers, removed.")
    attributed_citations: list[int] = Field(default_factory=list, description="Added where the model cited none.")
    number_mismatches: list[NumberMismatch] = Field(
        default_factory=list, description="Numbers of the draft not in its sources; their sentences were not shown."
    )
    dropped_sentences: list[str] = Field(default_factory=list, description="Draft sentences not shown, and why.")
    grounding_note: str | None = Field(
        default=None, description="A warning for the reader when the shown answer is weakly supported by its sources."
    )
    timings_ms: dict[str, float] = Field(default_factory=dict)


def citation_of(number: int, hit: SearchHit, explanation: SourceExplanation | None = None) -> Citation:
    metadata = hit.metadata
    return Citation(
        number=number,
        node_id=hit.id,
        document_id=str(metadata.get("document_id", hit.id)),
        title=str(metadata.get("title", "")),
        section=str(metadata.get("header_path", "")),
        source_path=str(metadata.get("source_path", "")),
        audience=str(metadata.get("audience", "")),
        score=hit.normalised_score,
        text=hit.text,
        explanation=explanation,
    )


def validate_message(message: Any, max_chars: int, brand: BrandProfile) -> str | None:
    """A polite reply for a message that cannot be answered, or None when it is fine."""
    strings = brand.strings
    if not isinstance(message, str):
        return strings.not_text
    stripped = message.strip()
    if not stripped or not any(character.isalnum() for character in stripped):
        return strings.empty_message
    if len(stripped) > max_chars:
        return strings.too_long.format(length=len(stripped), limit=max_chars)
    return None


def own_questions(question: str, standalone: str) -> list[str]:
    """What the client's own message asks, searched beside the whole intent: its separate questions when it asks
    several things; the message alone when it was joined with the turn before ("and my lambskin Orée, same
    routine?" after a question about calfskin), whose words the joined question outweighs; else nothing."""
    if standalone != question:
        return [question]
    parts = question_parts(question)
    return parts if len(parts) > 1 else []


def merged_lines(chosen: Sequence[EvidenceUnit], added: Sequence[EvidenceUnit]) -> list[EvidenceUnit]:
    """`chosen`, then each unit of `added` that is not among them (a unit is its passage and position)."""
    lines = {(unit.source_number, unit.position): unit for unit in chosen}
    for unit in added:
        lines.setdefault((unit.source_number, unit.position), unit)
    return list(lines.values())


def _closed(text: str) -> str:
    text = text.rstrip()
    return text if not text or text[-1] in ".!?:;" else text + "."


def quoted_lines(units: list[EvidenceUnit], lead: str) -> str:
    """`units` quoted under `lead` in the order they stand in their passages; units that follow each other in a
    passage form one excerpt, cited once with its source number."""
    runs: list[list[EvidenceUnit]] = []
    for unit in sorted(units, key=lambda u: (u.source_number, u.position)):
        previous = runs[-1][-1] if runs else None
        if previous and (previous.source_number, previous.position + 1) == (unit.source_number, unit.position):
            runs[-1].append(unit)
        else:
            runs.append([unit])
    lines = []
    for run in runs:
        text = " ".join([*(_closed(unit.text) for unit in run[:-1]), run[-1].text.rstrip()])
        ending = text[-1] if text and text[-1] in ".!?" else "."
        lines.append(f"- {text.rstrip('.!?')} [{run[0].source_number}]{ending}")
    return "\n".join([lead, *lines])


class AnswerStream:
    """Iterate for text deltas. `sources` is known before the first token; `answer` once iteration ends."""

    def __init__(self, sources: list[Citation], standalone_question: str, deltas: Iterator[str], finish):
        self.sources = sources
        self.standalone_question = standalone_question
        self._deltas = deltas
        self._finish = finish
        self._answer: AssistantAnswer | None = None
        self.model_draft: list[str] = []  # the model's raw text, for diagnosis

    def __iter__(self) -> Iterator[str]:
        parts: list[str] = []
        for delta in self._deltas:
            parts.append(delta)
            yield delta
        final = self._finish("".join(parts))
        if not parts:
            # Nothing of the draft passed its checks: the client reads the quoted evidence or the handoff instead.
            yield final.text
        self._answer = final

    def close(self) -> None:
        """Stop generating (a client went away): the model is released and no answer is recorded."""
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()

    @property
    def answer(self) -> AssistantAnswer:
        if self._answer is None:
            for _ in self:
                pass
        assert self._answer is not None
        return self._answer


class Assistant:
    def __init__(
        self,
        retriever_index: BaseMultiVectorIndex,
        chat_model: ChatModel,
        settings: AssistantSettings | None = None,
        calibration: AbstentionCalibration | None = None,
        memory: SessionMemory | None = None,
        judge: GroundingJudge | None = None,
        brand: BrandProfile | None = None,
    ):
        self.settings = settings or AssistantSettings.load()
        self.brand = brand or self.settings.brand()
        self.index = retriever_index
        self.chat_model = chat_model
        self.memory = memory or SessionMemory(
            self.settings.chat.memory_token_limit, chat_model.count_tokens, self.settings.chat.max_sessions
        )
        self.judge = judge or GroundingJudge.load_default(encoder=retriever_index.encoder)
        calibration = calibration or AbstentionCalibration.load()
        retrieval = self.settings.retrieval

        def threshold(configured: float | None, calibrated: str) -> float:
            if configured is not None:
                return configured
            return float(getattr(calibration, calibrated)) if calibration else 0.0

        self.min_score_to_answer = threshold(retrieval.min_score_to_answer, "min_score_to_answer")
        self.min_evidence_to_answer = threshold(retrieval.min_evidence_to_answer, "min_evidence_to_answer")
        self.min_evidence_for_extract = threshold(retrieval.min_evidence_for_extract, "min_evidence_for_extract")
        self._vocabulary: tuple[int, DocumentVocabulary] | None = None
        self._vocabulary_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: AssistantSettings | None = None,
        encoder: ColBERTAttEncoder | None = None,
        chat_model: ChatModel | None = None,
        index: BaseMultiVectorIndex | None = None,
    ) -> Assistant:
        """The assistant on `index`, or on the brand's index where the settings put it (a folder, or a Qdrant
        collection), which must already exist: the app indexes the brand's documents first
        (`colbert_att_assistant.knowledge_base.ingest.index_brand_documents`), and so can a benchmark or a test."""
        from colbert_att_assistant.knowledge_base.ingest import (
            open_brand_index,  # the knowledge base sits above the assistant's settings
        )

        settings = settings or AssistantSettings.load()
        if index is None:
            index = open_brand_index(settings, encoder)
        return cls(index, chat_model or ChatModel.from_settings(settings.llm), settings, brand=settings.brand())

    # ---- the steps of one turn ----------------------------------------------------------------------------

    def vocabulary(self) -> DocumentVocabulary:
        """The indexed documents' words (spelling correction, unknown words), read at first use and again after the
        index gains or loses documents."""
        count = len(self.index)
        with self._vocabulary_lock:
            if self._vocabulary is None or self._vocabulary[0] != count:
                self._vocabulary = (count, DocumentVocabulary.of_index(self.index))
            return self._vocabulary[1]

    def retrieve(self, query: EncodedText, audience: Audience, scoring: ScoringMode | None = None) -> list[Citation]:
        """The top passages, numbered from 1; customer mode sees only public ones (a metadata filter of the index,
        not a rule in the prompt). Staff mode also says why each was found (`Citation.explanation`): that costs a
        stored-document read and a tokenisation per passage, which customers' turns do not pay."""
        hits = self._hits(query, audience, scoring, self.settings.retrieval.top_k)
        return self._numbered(hits, query, audience, scoring, first_number=1)

    def retrieve_with_spread(
        self, query: EncodedText, audience: Audience, scoring: ScoringMode | None = None
    ) -> tuple[list[Citation], float | None]:
        """`retrieve`, and the spread of the ranking's top scores (`answerability.score_spread`), read from a
        deeper search than the passages kept."""
        top_k = self.settings.retrieval.top_k
        hits = self._hits(query, audience, scoring, max(top_k, SPREAD_DEPTH))
        return self._numbered(hits[:top_k], query, audience, scoring, 1), score_spread([h.score for h in hits])

    def part_sources(
        self,
        part_queries: Sequence[EncodedText],
        audience: Audience,
        scoring: ScoringMode | None,
        found: list[Citation],
    ) -> tuple[list[Citation], list[float | None]]:
        """For a message that asks several things, each question's best passage that the whole message did not
        find, numbered after `found`: a second question about another topic gets its source. Also the score spread
        of each question's own ranking."""
        extra: list[Citation] = []
        spreads: list[float | None] = []
        seen = {citation.node_id for citation in found}
        for part in part_queries:
            hits = self._hits(part, audience, scoring, SPREAD_DEPTH)
            spreads.append(score_spread([h.score for h in hits]))
            for hit in self._numbered(hits[:1], part, audience, scoring, first_number=len(found) + len(extra) + 1):
                if hit.node_id not in seen:
                    seen.add(hit.node_id)
                    extra.append(hit)
        return extra, spreads

    def _hits(self, query: EncodedText, audience: Audience, scoring: ScoringMode | None, top_k: int) -> list[SearchHit]:
        return self.index.search(
            query,
            top_k=top_k,
            mode=scoring or self.settings.retrieval.scoring,
            filters=PUBLIC_ONLY if audience is Audience.CUSTOMER else None,
            explain=audience is Audience.STAFF,
        )

    def _numbered(
        self,
        hits: Sequence[SearchHit],
        query: EncodedText,
        audience: Audience,
        scoring: ScoringMode | None,
        first_number: int,
    ) -> list[Citation]:
        scoring = scoring or self.settings.retrieval.scoring
        staff = audience is Audience.STAFF
        return [
            citation_of(number, hit, explain_hit(hit, self.index, query, scoring) if staff else None)
            for number, hit in enumerate(hits, start=first_number)
        ]

    def alignments(self, query: EncodedText, sources: list[Citation]) -> list[np.ndarray]:
        """The (query tokens, passage tokens) cosine matrix of each source, read once per turn and shared by the
        evidence, the judge's candidates and the unknown-word check."""
        return [self.index.token_similarities(query, s.node_id) for s in sources]

    def evidence(
        self, query: EncodedText, sources: list[Citation], similarities: Sequence[np.ndarray] | None = None
    ) -> Evidence:
        """The lines of `sources` that answer the query, by the token alignment of the score."""
        passages = [(s.number, s.node_id, s.text) for s in sources]
        units = self.settings.retrieval.evidence_units
        return evidence_for(self.index, query, passages, max_units=units, similarities=similarities)

    def candidate_lines(
        self,
        query: EncodedText,
        sources: list[Citation],
        count: int,
        similarities: Sequence[np.ndarray] | None = None,
    ) -> list[EvidenceUnit]:
        """The `count` lines of `sources` best aligned with the query, best first: what a line judge reads.

        Lead-ins ("For a piece that has darkened in a drawer:") are left out: quoted alone they say nothing, and the
        lines after them, which hold the answer, are candidates of their own."""
        passages = [(s.number, s.node_id, s.text) for s in sources]
        ranked = evidence_for(
            self.index, query, passages, max_units=1000, ranked_only=True, similarities=similarities
        ).units
        return [unit for unit in ranked if not unit.text.rstrip().endswith(":")][:count]

    def with_part_lines(
        self, chosen: list[EvidenceUnit], part_queries: Sequence[EncodedText], sources: list[Citation]
    ) -> list[EvidenceUnit]:
        """The lines chosen for the whole message, plus the best-aligned line of each of its questions where that
        line is not among them: a message that asks two things gets a line for each, and loses none it had."""
        return merged_lines(chosen, [unit for part in part_queries for unit in self.candidate_lines(part, sources, 1)])

    def handoff_text(self) -> str:
        return " ".join(part for part in (self.brand.strings.abstain, self.brand.handoff) if part)

    # ---- public API ---------------------------------------------------------------------------------------

    def stream(
        self,
        message: Any,
        session_id: str | None = None,
        audience: Audience | str = Audience.CUSTOMER,
        scoring: ScoringMode | str | None = None,
    ) -> AnswerStream:
        audience = Audience(audience)
        started = time.perf_counter()
        problem = validate_message(message, self.settings.chat.max_message_chars, self.brand)
        if problem is not None:
            text = message if isinstance(message, str) else f"<{type(message).__name__}>"
            answer = AssistantAnswer(
                text=problem, abstained=True, abstain_reason="invalid_message", answer_path="invalid",
                question=text[:200], standalone_question="", audience=audience,
            )  # fmt: skip
            return AnswerStream([], "", iter([problem]), lambda _: answer)

        question = message.strip()
        searched = self.vocabulary().correct(question) if self.settings.retrieval.correct_spelling else question
        history = self.memory.history(session_id)
        standalone = standalone_question(searched, history)
        # One encoding of the question serves retrieval and the evidence alignment.
        query = self.index.encoder.encode_query(standalone)
        parts = own_questions(searched, standalone)
        part_queries = self.index.encoder.encode_queries(parts) if parts else []
        chosen_scoring = ScoringMode(scoring) if scoring else None
        found, spread = self.retrieve_with_spread(query, audience, chosen_scoring)
        added, part_spreads = self.part_sources(part_queries, audience, chosen_scoring, found)
        sources = [*found, *added]
        # A message is as answerable as the clearest of its searches: a follow-up's own words ("what about my suede
        # loafers?") can single out their passage where the question joined with the turn before matches many.
        spread = max((s for s in [spread, *part_spreads] if s is not None), default=None)
        retrieved_at = time.perf_counter()
        top_score = sources[0].score if sources else None
        # The whole message's evidence is read from its own passages; a part's added passage serves that part.
        found_alignments = self.alignments(query, found)
        evidence = self.evidence(query, found, found_alignments) if found else None
        evidence_at = time.perf_counter()
        timings = {"retrieval": (retrieved_at - started) * 1000, "evidence": (evidence_at - retrieved_at) * 1000}
        evidence_lines = [f"[{u.source_number}] {u.text}" for u in evidence.units] if evidence else []

        def record(answer: AssistantAnswer) -> AssistantAnswer:
            self.memory.add_turn(session_id, question, answer.text, abstained=answer.abstained)
            return answer

        turn = dict(
            sources=sources, evidence=evidence_lines, question=question, standalone_question=standalone,
            audience=audience, top_score=top_score, evidence_score=evidence.best_score if evidence else None,
            score_spread=spread,
        )  # fmt: skip

        def abstention(reason: AbstainReason, **extra: Any) -> AssistantAnswer:
            return AssistantAnswer(
                text=self.handoff_text(), abstained=True, abstain_reason=reason, answer_path="abstained",
                **turn, **extra,
            )  # fmt: skip

        def best_lines() -> list[EvidenceUnit]:
            assert evidence is not None
            return sorted(evidence.units, key=lambda unit: -unit.score)[: self.settings.retrieval.quoted_lines]

        def quotation(units: list[EvidenceUnit] | None = None, **extra: Any) -> AssistantAnswer:
            """The best evidence lines (or `units`) as the answer, cited (grounded by construction)."""
            units = best_lines() if units is None else units
            units = with_context(units, {s.number: s.text for s in sources}, self.settings.retrieval.quote_context)
            text = quoted_lines(units, self.brand.strings.extractive_lead)
            by_number = {s.number: s for s in sources}
            cited = list(dict.fromkeys(int(n) for n in re.findall(r"\[(\d+)\]", text)))
            return AssistantAnswer(
                text=text, abstained=False, answer_path="extractive", citations=[by_number[n] for n in cited],
                **turn, **extra,
            )  # fmt: skip

        def finish_without_generation(make: Any, *args: Any, **extra: Any) -> AnswerStream:
            """An answer made at once (`abstention` or `quotation`): its first token is the whole of it."""
            total = (time.perf_counter() - started) * 1000
            answer = record(make(*args, timings_ms={**timings, "first_token": total, "total": total}, **extra))
            return AnswerStream(sources, standalone, iter([answer.text]), lambda _: answer)

        def finish_without_model(reason: AbstainReason, **extra: Any) -> AnswerStream:
            return finish_without_generation(abstention, reason, **extra)

        if evidence is None or not evidence.units:
            return finish_without_model("no_sources")
        # Staff read the sources themselves: in the quoted and judged styles, lines below a gate are more use to
        # them than a handoff, and are quoted marked as a weak match.
        staff_sees_weak_matches = (
            audience is Audience.STAFF
            and self.settings.retrieval.staff_weak_matches
            and self.settings.retrieval.answer_style in (AnswerStyle.QUOTED, AnswerStyle.JUDGED)
        )
        weak_retrieval = top_score is not None and top_score < self.min_score_to_answer
        weak_evidence = evidence.best_score < self.min_evidence_to_answer
        if weak_retrieval and not staff_sees_weak_matches:
            return finish_without_model("weak_retrieval")
        if weak_evidence and not staff_sees_weak_matches:
            return finish_without_model("weak_evidence")
        # Past here only staff can be below those two gates; what they are shown then is marked.
        below_answer_gates = weak_retrieval or weak_evidence
        weak_quote = {"weak_match": True, "grounding_note": WEAK_MATCH_NOTE}
        if self.settings.retrieval.answer_style in (AnswerStyle.QUOTED, AnswerStyle.JUDGED):
            # The client's own words: for a follow-up, its own encoding (searched alone too), else the query's.
            message_query = part_queries[0] if standalone != searched else query
            similarities = found_alignments if message_query is query else self.alignments(message_query, found)
            unknown = weakest_unknown_word(self.index.encoder, self.vocabulary(), searched, message_query, similarities)
            turn["unknown_word"], turn["unknown_word_similarity"] = unknown.word, unknown.similarity
            if unknown.similarity < self.settings.retrieval.min_unknown_word_similarity:
                return finish_without_model("unknown_subject")
            # A table row the message names by a value it gives ("I'm a UK 8"), which the alignment reads poorly.
            named_rows = rows_named_by(searched, [(s.number, s.text) for s in sources])
            turn["named_rows"] = len(named_rows)
        if self.settings.retrieval.answer_style == AnswerStyle.QUOTED:
            # No model: the best lines are the answer when the evidence, weighed with how much the best passages
            # stand out of the ranking, is strong enough to stand on its own, or when the message names a table row
            # of the sources by a value it gives (a size to convert).
            retrieval = self.settings.retrieval
            confidence = spread_adjusted(evidence.best_score, spread, retrieval.score_spread_weight)
            chosen = merged_lines(self.with_part_lines(best_lines(), part_queries, sources), named_rows)
            if below_answer_gates or (confidence < retrieval.min_evidence_to_quote and not named_rows):
                if not staff_sees_weak_matches:
                    return finish_without_model("weak_evidence")
                return finish_without_generation(quotation, chosen, **weak_quote)
            return finish_without_generation(quotation, chosen)
        if self.settings.retrieval.answer_style == AnswerStyle.JUDGED:
            # No text from the model: it judges each candidate line, and the quote is taken from its ranking.
            retrieval = self.settings.retrieval
            candidates = self.candidate_lines(query, found, retrieval.judged_candidates, found_alignments)
            judged = LineJudge(self.chat_model).rank(standalone, candidates)
            timings["judge"] = (time.perf_counter() - evidence_at) * 1000
            best_odds = max((line.log_odds for line in judged), default=float("-inf"))
            chosen = [line.unit for line in judged[: retrieval.quoted_lines]]
            chosen = merged_lines(self.with_part_lines(chosen, part_queries, sources), named_rows)
            if below_answer_gates or best_odds < retrieval.min_judge_log_odds:
                if not staff_sees_weak_matches or not chosen:
                    return finish_without_model("no_line_answers", judge_log_odds=best_odds)
                return finish_without_generation(quotation, chosen, judge_log_odds=best_odds, **weak_quote)
            return finish_without_generation(quotation, chosen, judge_log_odds=best_odds)

        prompt_sources = [
            PromptSource(number, units[0].heading, tuple(unit.text for unit in units))
            for number, units in evidence.by_source().items()
        ]
        messages = answer_messages(standalone, prompt_sources, self.brand)
        checker = DraftChecker({s.number: s.text for s in sources}, self.judge)
        first_shown: list[float] = []
        draft: list[str] = []

        def model_deltas() -> Iterator[str]:
            for delta in self.chat_model.stream(messages):
                draft.append(delta)
                yield delta

        def deltas() -> Iterator[str]:
            for piece in checker.stream(model_deltas()):
                if not first_shown:
                    first_shown.append(time.perf_counter())
                yield piece

        def finish(shown: str) -> AssistantAnswer:
            ended = time.perf_counter()
            check = checker.result
            by_number = {s.number: s for s in sources}
            dropped = [f"{s.reason}: {s.text}" for s in check.sentences if not s.shown and s.text]
            checked = dict(
                removed_citations=check.removed_citations,
                attributed_citations=check.attributed_citations,
                number_mismatches=check.number_mismatches,
                dropped_sentences=dropped,
            )
            first = (first_shown[0] if first_shown else ended) - started
            times = {**timings, "first_token": first * 1000, "total": (ended - started) * 1000}
            if shown.strip() and check.cited:
                answer = AssistantAnswer(
                    text=shown.strip(), abstained=False, answer_path="generated",
                    citations=[by_number[n] for n in check.cited], timings_ms=times, **turn, **checked,
                )  # fmt: skip
                # The sentences passed one by one; the note reads the answer as a whole (quoted evidence needs none).
                answer.grounding_note = grounding_note(self.judge, answer)
                return record(answer)
            # A draft that drifted from its sources still says the model found an answer there: quote the evidence.
            # A model that declined outright is overruled only by strong evidence.
            drifted = bool(check.sentences) and not check.declined
            if drifted or evidence.best_score >= self.min_evidence_for_extract:
                return record(quotation(timings_ms=times, **checked))
            reason: AbstainReason = "model_declined" if check.declined else "unsupported_answer"
            return record(abstention(reason, timings_ms=times, **checked))

        stream = AnswerStream(sources, standalone, deltas(), finish)
        stream.model_draft = draft
        return stream

    def answer(
        self,
        message: Any,
        session_id: str | None = None,
        audience: Audience | str = Audience.CUSTOMER,
        scoring: ScoringMode | str | None = None,
    ) -> AssistantAnswer:
        return self.stream(message, session_id=session_id, audience=audience, scoring=scoring).answer

    def reset(self, session_id: str) -> None:
        self.memory.clear(session_id)
