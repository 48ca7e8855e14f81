"""The note under a generated answer whose sentences the grounding judge could not verify in the sources.

Each sentence of an answered turn is read against the source(s) it cites, as ALCE scores citations: a sentence
citing [2] is not vouched for by source [1] merely because [1] was also shown to the model. Only a sentence that
cites nothing is read against every source shown. The chat shows a short warning naming the weakest sentence when
a sentence contradicts its source (a different figure, product or polarity) or is not supported by it, when the
answer as a whole falls below the judge's answer threshold, or when it states nothing checkable at all. Abstentions
get no note: they claim nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from colbert_att_assistant.grounding.judge import ClaimVerdict, EvidenceScope, GroundingJudge, GroundingReport, Verdict

if TYPE_CHECKING:
    from colbert_att_assistant.assistant.chat import AssistantAnswer

logger = logging.getLogger(__name__)

MAX_CLAIM_CHARS = 120
NOTE_PREFIX = "⚠️ Parts of this answer could not be verified in the cited sources"
CONTRADICTED_PREFIX = "⚠️ A detail of this answer differs from the cited sources"
WEAK_ANSWER_NOTE = (
    "⚠️ This answer is only weakly supported by the cited sources: please check them before relying on it."
)
NO_CLAIM_NOTE = (
    "⚠️ This answer does not state anything the cited sources could confirm: please check them or ask an advisor."
)


def _shorten(text: str, limit: int = MAX_CLAIM_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip(" ,;:") + "…"


def _weakest(claims: list[ClaimVerdict]) -> ClaimVerdict:
    """A contradicted claim (a figure, name or negation its source states otherwise) before a merely weak one."""
    return min(claims, key=lambda claim: (claim.verdict is not Verdict.CONTRADICTED, claim.support))


def judge_turn(judge: GroundingJudge, answer: AssistantAnswer) -> GroundingReport:
    """The judge's report on an answered turn, each sentence against its own citations (ALCE)."""
    questions = dict.fromkeys(q for q in (answer.question, answer.standalone_question) if q and q.strip())
    return judge.judge(
        answer.text,
        cited={c.number: c.text for c in answer.citations if c.text.strip()},
        retrieved=[s.text for s in answer.sources if s.text.strip()],
        question="\n".join(questions) or None,
        scope=EvidenceScope.OWN_CITATIONS,
    )


def grounding_note(judge: GroundingJudge, answer: AssistantAnswer) -> str | None:
    """A short warning for the reader when `answer` is not grounded in its sources, else None."""
    if answer.abstained or not answer.text.strip():
        return None
    try:
        report = judge_turn(judge, answer)
    except ValueError:
        # The note is advice on top of an answer that already passed the assistant's own checks: never fail the turn.
        logger.warning("Could not judge the grounding of an answer.", exc_info=True)
        return None
    if not report.claims:
        # Only greetings, lead-ins or sentences such as "Our care guide covers leather care.": no answer to vouch for.
        return NO_CLAIM_NOTE if report.no_claims else None
    unsupported = [claim for claim in report.claims if not claim.supported]
    if report.supported and not unsupported:
        return None
    if not unsupported:
        return WEAK_ANSWER_NOTE
    claim = _weakest(unsupported)
    more = len(unsupported) - 1
    others = f" (and {more} more sentence{'s' if more > 1 else ''})" if more else ""
    prefix = CONTRADICTED_PREFIX if claim.verdict is Verdict.CONTRADICTED else NOTE_PREFIX
    return f"{prefix}: “{_shorten(claim.text)}”{others}"
