"""Reading a turn in its conversation: a statement that asks nothing, and a follow-up that needs the turn before.

No LLM call: a follow-up is joined with the client's previous message, so that "and for the Métro?" is searched
and answered as one intent with "How often does the Corvane 1911 need a service?", and "a replacement one" keeps
the "alligator strap" of the turn before. Only the client's own words are carried over, never an earlier reply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from colbert_att_assistant.assistant.evidence import STOPWORDS

_ASKS = re.compile(
    r"\?|\b(how|what|when|where|why|which|who|whom|whose|help|need|want|wondering|tell me|explain|recommend|advise|"
    r"suggest|please|possible)\b"
    # An auxiliary asks only where a sentence starts ("is it waterproof"), not inside one ("my bag is brown").
    r"|(?:^|[.!]\s+)(can|could|should|would|will|shall|may|might|must|do|does|did|is|are|was|were|have|has|any)\b",
    re.IGNORECASE,
)
_ABOUT_ME = re.compile(r"^\s*(i|i'm|im|i've|ive|i'd|we|we've|we're|my|our|just|thanks|thank you|hello|hi)\b", re.I)
_REFERS_BACK = re.compile(
    r"^\s*(and|also|ok(ay)?|so|but|then|what about|how about|what if)\b|\b(it|its|it's|they|them|their|theirs|this|"
    r"that|these|those|one|ones|same|there|instead|too|either|else|another|the other)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A question with this few content words leans on the turn before ("how long does the painted version take?").
SHORT_QUESTION_WORDS = 4


def asks_something(message: str) -> bool:
    """False only for a message that plainly states something about the client ("I just bought the Nocturne
    jacket.", "My bag is brown"): no question mark, no asking word, and it opens with the client themself. Anything
    else, typos included ("shoud i tumble dry my linen"), is treated as a question."""
    if _ASKS.search(message):
        return True
    return not _ABOUT_ME.match(message)


def content_word_count(text: str) -> int:
    return sum(1 for word in _WORD.findall(text.lower()) if word not in STOPWORDS)


def refers_back(question: str) -> bool:
    return bool(_REFERS_BACK.search(question)) or content_word_count(question) <= SHORT_QUESTION_WORDS


def previous_client_message(history: Sequence[ChatMessage]) -> str | None:
    return next((m.content for m in reversed(history) if m.role is MessageRole.USER and m.content), None)


def standalone_question(question: str, history: Sequence[ChatMessage]) -> str:
    """The question with what it refers to: the previous client message joined in front when the question leans
    on it, or when that message was a statement waiting for its question."""
    previous = previous_client_message(history)
    if not previous:
        return question
    if refers_back(question) or not asks_something(previous):
        joiner = " " if previous.rstrip().endswith((".", "!", "?")) else ". "
        return f"{previous.strip()}{joiner}{question}"
    return question
