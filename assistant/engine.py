"""The assistant: a conversation turn in, a cited answer (streamed) or an honest "I don't know" out.

One turn: check the message → condense a follow-up into a standalone question → retrieve (customer mode sees
only `audience: public` chunks, enforced by the retriever's metadata filter) → abstain early when the retrieval
evidence is below the calibrated threshold → prompt with numbered sources inside the context window → stream →
map citations to sources, drop invented ones, check quoted numbers, detect the model's own "I don't know".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from pydantic import BaseModel, Field

from assistant.abstention import AbstentionCalibration, model_abstained
from assistant.citations import NumberMismatch, check_citations, content_words
from assistant.errors import AssistantError
from assistant.llm_backends import ChatModel
from assistant.memory import SessionMemory
from assistant.prompts import ABSTAIN_SENTENCE, PromptSource, answer_messages, condense_messages
from assistant.settings import AssistantSettings, Mode
from retriever.encoder import ColBERTAttEncoder
from retriever.index import MultiVectorIndex
from retriever.llama_retriever import ColBERTAttRetriever
from retriever.scoring import ScoringMode

logger = logging.getLogger(__name__)

AbstainReason = Literal["invalid_message", "weak_retrieval", "no_sources", "model_declined", "unsupported_answer"]
PUBLIC_ONLY = MetadataFilters(filters=[MetadataFilter(key="audience", value="public", operator=FilterOperator.EQ)])
# Tokens ChatML adds around each message (<|im_start|>role\n ... <|im_end|>\n).
MESSAGE_OVERHEAD_TOKENS = 6


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


class AssistantAnswer(BaseModel):
    """One answered turn: what the chat widget shows and what the feedback log keeps."""

    text: str
    abstained: bool
    abstain_reason: AbstainReason | None = None
    citations: list[Citation] = Field(default_factory=list, description="Sources the answer cites, in order.")
    sources: list[Citation] = Field(default_factory=list, description="Every source the model was shown.")
    question: str
    standalone_question: str
    mode: Mode
    top_score: float | None = None
    removed_citations: list[int] = Field(default_factory=list, description="Invented source numbers, removed.")
    attributed_citations: list[int] = Field(default_factory=list, description="Added where the model cited none.")
    number_mismatches: list[NumberMismatch] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)


def _citation(number: int, hit: NodeWithScore) -> Citation:
    metadata = hit.node.metadata
    return Citation(
        number=number,
        node_id=hit.node.node_id,
        document_id=str(metadata.get("document_id", hit.node.node_id)),
        title=str(metadata.get("title", "")),
        section=str(metadata.get("header_path", "")),
        source_path=str(metadata.get("source_path", "")),
        audience=str(metadata.get("audience", "")),
        score=float(hit.score or 0.0),
        text=hit.node.get_content(),
    )


def validate_message(message: Any, max_chars: int) -> str | None:
    """A polite reply for a message that cannot be answered, or None when it is fine."""
    if not isinstance(message, str):
        return "I can only read text messages. Please type your question about our products or services."
    stripped = message.strip()
    if not stripped or not any(character.isalnum() for character in stripped):
        return "Your message seems to be empty. How can I help you with your Maison Corvane piece today?"
    if len(stripped) > max_chars:
        return (
            f"Your message is {len(stripped):,} characters long; I can read up to {max_chars:,}. "
            "Could you ask your question in a shorter message?"
        )
    return None


class AnswerStream:
    """Iterate for text deltas. `sources` is known before the first token; `answer` once iteration ends."""

    def __init__(self, sources: list[Citation], standalone_question: str, deltas: Iterator[str], finish):
        self.sources = sources
        self.standalone_question = standalone_question
        self._deltas = deltas
        self._finish = finish
        self._answer: AssistantAnswer | None = None

    def __iter__(self) -> Iterator[str]:
        parts: list[str] = []
        for delta in self._deltas:
            parts.append(delta)
            yield delta
        self._answer = self._finish("".join(parts))

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
        retriever_index: MultiVectorIndex,
        chat_model: ChatModel,
        settings: AssistantSettings | None = None,
        calibration: AbstentionCalibration | None = None,
        memory: SessionMemory | None = None,
    ):
        self.settings = settings or AssistantSettings.load()
        self.index = retriever_index
        self.chat_model = chat_model
        self.memory = memory or SessionMemory(
            self.settings.chat.memory_token_limit, chat_model.count_tokens, self.settings.chat.max_sessions
        )
        calibration = calibration or AbstentionCalibration.load()
        configured = self.settings.retrieval.min_score_to_answer
        self.min_score_to_answer = (
            configured if configured is not None else (calibration.min_score_to_answer if calibration else 0.0)
        )

    @classmethod
    def from_settings(
        cls,
        settings: AssistantSettings | None = None,
        encoder: ColBERTAttEncoder | None = None,
        chat_model: ChatModel | None = None,
        show_progress: bool = False,
    ) -> Assistant:
        """Index (or update the index of) the documents folder, load it, and build the LLM."""
        from knowledge_base.ingest import ingest  # the knowledge base depends on the retriever, not the reverse

        settings = settings or AssistantSettings.load()
        encoder = encoder or ColBERTAttEncoder()
        index_dir = Path(settings.retrieval.index_dir)
        report = ingest(Path(settings.retrieval.documents_dir), index_dir, encoder=encoder, show_progress=show_progress)
        for error in report.errors:
            logger.warning("Knowledge base: %s", error)
        index = MultiVectorIndex.load(index_dir, encoder=encoder)
        return cls(index, chat_model or ChatModel.from_settings(settings.llm), settings)

    # ---- the steps of one turn ----------------------------------------------------------------------------

    def retriever(self, mode: Mode | str, scoring: ScoringMode | None = None, top_k: int | None = None):
        return ColBERTAttRetriever(
            self.index,
            similarity_top_k=top_k or self.settings.retrieval.top_k,
            filters=PUBLIC_ONLY if Mode(mode) is Mode.CUSTOMER else None,
            scoring=scoring or self.settings.retrieval.scoring,
        )

    def condense(self, question: str, history: list[ChatMessage]) -> str:
        """A follow-up ("and for suede?") as a standalone question, for retrieval."""
        if not history:
            return question
        rewritten = self.chat_model.complete(condense_messages(question, history)).strip().strip('"').strip()
        rewritten = rewritten.splitlines()[0].strip() if rewritten else ""
        last_user = next((m.content for m in reversed(history) if m.role.value == "user"), "")
        if not rewritten or len(rewritten) > 4 * len(question) + 200:
            # The model did not produce a usable rewrite: search with the last question and this one together.
            return f"{last_user} {question}".strip()
        if not content_words(question) <= content_words(rewritten):
            # Small models often repeat the previous question and drop what is new ("and my silk tie?"): the
            # client's own words must reach retrieval, so they go first (queries are cut at 32 word pieces).
            return f"{question} {rewritten}"
        return rewritten

    def _fit_context(
        self, question: str, sources: list[PromptSource], history: list[ChatMessage]
    ) -> tuple[list[ChatMessage], list[PromptSource]]:
        """Drop the oldest history, then the weakest sources, until the prompt leaves room for the answer."""
        budget = self.chat_model.context_window - self.settings.llm.max_new_tokens

        def cost(messages: list[ChatMessage]) -> int:
            return sum(self.chat_model.count_tokens(m.content or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)

        history, sources = list(history), list(sources)
        messages = answer_messages(question, sources, history)
        while cost(messages) > budget and (history or len(sources) > 1):
            if history:
                del history[:2]
            else:
                sources.pop()
            messages = answer_messages(question, sources, history)
        if cost(messages) > budget:
            raise AssistantError(
                f"The question and one source need {cost(messages)} tokens but the model's window leaves {budget}; "
                "raise llm.context_window or lower llm.max_new_tokens."
            )
        return messages, sources

    # ---- public API ---------------------------------------------------------------------------------------

    def stream(
        self,
        message: Any,
        session_id: str | None = None,
        mode: Mode | str = Mode.CUSTOMER,
        scoring: ScoringMode | str | None = None,
    ) -> AnswerStream:
        mode = Mode(mode)
        started = time.perf_counter()
        problem = validate_message(message, self.settings.chat.max_message_chars)
        if problem is not None:
            text = message if isinstance(message, str) else f"<{type(message).__name__}>"
            answer = AssistantAnswer(
                text=problem,
                abstained=True,
                abstain_reason="invalid_message",
                question=text[:200],
                standalone_question="",
                mode=mode,
            )
            return AnswerStream([], "", iter([problem]), lambda _: answer)

        question = message.strip()
        history = self.memory.history(session_id)
        standalone = self.condense(question, history)
        condensed_at = time.perf_counter()
        hits = self.retriever(mode, ScoringMode(scoring) if scoring else None).retrieve(QueryBundle(standalone))
        retrieved_at = time.perf_counter()
        sources = [_citation(number, hit) for number, hit in enumerate(hits, start=1)]
        top_score = sources[0].score if sources else None
        timings = {
            "condense": (condensed_at - started) * 1000,
            "retrieval": (retrieved_at - condensed_at) * 1000,
        }

        def finish_without_model(reason: AbstainReason) -> AnswerStream:
            text = f"{ABSTAIN_SENTENCE} {self.settings.chat.handoff}"
            answer = AssistantAnswer(
                text=text,
                abstained=True,
                abstain_reason=reason,
                sources=sources,
                question=question,
                standalone_question=standalone,
                mode=mode,
                top_score=top_score,
                timings_ms={**timings, "first_token": timings["retrieval"], "total": timings["retrieval"]},
            )
            self.memory.add_turn(session_id, question, text)
            return AnswerStream(sources, standalone, iter([text]), lambda _: answer)

        if not sources:
            return finish_without_model("no_sources")
        if top_score is not None and top_score < self.min_score_to_answer:
            return finish_without_model("weak_retrieval")

        prompt_sources = [PromptSource(s.number, s.title, s.section, s.text) for s in sources]
        messages, prompt_sources = self._fit_context(question, prompt_sources, history)
        shown = sources[: len(prompt_sources)]
        first_token_at: list[float] = []

        def deltas() -> Iterator[str]:
            for delta in self.chat_model.stream(messages):
                if not first_token_at:
                    first_token_at.append(time.perf_counter())
                yield delta

        def finish(raw: str) -> AssistantAnswer:
            ended = time.perf_counter()
            checked = check_citations(raw, {s.number: s.text for s in shown})
            reason: AbstainReason | None = None
            if model_abstained(checked.text) or not checked.text.strip():
                reason = "model_declined"
            elif not checked.cited:
                # Not one sentence can be traced to a source: do not show a guess to the client.
                reason = "unsupported_answer"
            declined = reason is not None
            text = f"{ABSTAIN_SENTENCE} {self.settings.chat.handoff}" if declined else checked.text
            by_number = {s.number: s for s in shown}
            answer = AssistantAnswer(
                text=text,
                abstained=declined,
                abstain_reason=reason,
                citations=[] if declined else [by_number[n] for n in checked.cited],
                sources=shown,
                question=question,
                standalone_question=standalone,
                mode=mode,
                top_score=top_score,
                removed_citations=checked.removed,
                attributed_citations=checked.attributed,
                number_mismatches=[] if declined else checked.number_mismatches,
                timings_ms={
                    **timings,
                    "first_token": ((first_token_at[0] if first_token_at else ended) - started) * 1000,
                    "total": (ended - started) * 1000,
                },
            )
            self.memory.add_turn(session_id, question, text)
            return answer

        return AnswerStream(shown, standalone, deltas(), finish)

    def answer(
        self,
        message: Any,
        session_id: str | None = None,
        mode: Mode | str = Mode.CUSTOMER,
        scoring: ScoringMode | str | None = None,
    ) -> AssistantAnswer:
        return self.stream(message, session_id=session_id, mode=mode, scoring=scoring).answer

    def reset(self, session_id: str) -> None:
        self.memory.clear(session_id)
