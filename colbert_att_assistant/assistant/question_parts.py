"""The questions inside one client message: "How do I get olive oil out of suede? And how often should I re-spray
it?" asks two things, and an answer that quotes the three lines best aligned with the whole message often answers
only the first (the lines about oil outscore every line about the spray).

Each part is a question sentence, or a clause that opens a second question inside one sentence ("Do you charge to
check it, and where would the serial be?"), with the message's statements kept in front of every part as its
context ("I bought a wallet second hand."), so that "it" and "them" still have something to align with. No LLM: the
split is by punctuation and the words that open a question.
"""

from __future__ import annotations

import re

from colbert_att_assistant.assistant.follow_up import content_word_count

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# ", and where …", "; how …", " and also can …": a second question opening inside one sentence.
_SECOND_QUESTION = re.compile(
    r"(?:,\s*|;\s*|\s+)(?:and|also|plus|but)\s+(?:also\s+)?"
    r"(?=(?:how|what|when|where|why|which|who|whose|can|could|should|would|will|do|does|did|is|are|may|must)\b)",
    re.IGNORECASE,
)
# A part needs this many content words to be searched on its own ("and why?" leans on the rest).
MIN_PART_WORDS = 2
MAX_PARTS = 3


def _is_question(sentence: str) -> bool:
    return sentence.rstrip().endswith("?")


def question_parts(message: str) -> list[str]:
    """The message's separate questions, each with the message's statements in front; one item (the message
    itself) when it asks one thing. At most `MAX_PARTS`: beyond that the message is answered as a whole."""
    sentences = [s.strip() for s in _SENTENCE.split(message.strip()) if s.strip()]
    context = [s for s in sentences if not _is_question(s)]
    clauses = [
        clause.strip(" ,;")
        for sentence in sentences
        if _is_question(sentence)
        for clause in _SECOND_QUESTION.split(sentence)
        if clause.strip(" ,;")
    ]
    # A clause too short to search alone ("ok", "and why?") joins the question next to it.
    questions: list[str] = []
    pending = ""
    for clause in clauses:
        clause = f"{pending} {clause}".strip() if pending else clause
        pending = ""
        if content_word_count(clause) >= MIN_PART_WORDS:
            questions.append(clause if clause.endswith("?") else clause + "?")
        elif questions:
            questions[-1] = f"{questions[-1]} {clause}"
        else:
            pending = clause
    if not 2 <= len(questions) <= MAX_PARTS:
        return [message.strip()]
    prefix = " ".join(context)
    return [f"{prefix} {question}" if prefix else question for question in questions]
