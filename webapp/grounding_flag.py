"""A note under an answer whose sentences the grounding judge could not verify in the sources (issue #7).

The judge reads each sentence of an answered turn against the passages it cites and every passage the model was
shown; when a sentence is unsupported, or the answer as a whole falls below the judge's answer threshold, the
chat shows a short warning naming the weakest sentence. Abstentions get no note: they claim nothing.
"""

from __future__ import annotations

import logging

from assistant.engine import AssistantAnswer
from grounding.judge import ClaimVerdict, GroundingJudge

logger = logging.getLogger(__name__)

MAX_CLAIM_CHARS = 120
NOTE_PREFIX = "⚠️ Parts of this answer could not be verified in the cited sources"
WEAK_ANSWER_NOTE = (
    "⚠️ This answer is only weakly supported by the cited sources: please check them before relying on it."
)


def _shorten(text: str, limit: int = MAX_CLAIM_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip(" ,;:") + "…"


def _weakest(claims: list[ClaimVerdict]) -> ClaimVerdict:
    """A contradicted claim (a figure, name or negation no source backs) before a merely weak one."""
    return min(claims, key=lambda claim: (not claim.contradicted, claim.support_any))


def grounding_note(judge: GroundingJudge, answer: AssistantAnswer) -> str | None:
    """A short warning for the reader when `answer` is not grounded in its sources, else None."""
    if answer.abstained or not answer.text.strip():
        return None
    try:
        report = judge.judge(
            answer.text,
            cited={c.number: c.text for c in answer.citations if c.text.strip()},
            retrieved=[s.text for s in answer.sources if s.text.strip()],
        )
    except ValueError:
        # The note is advice on top of an answer that already passed the assistant's own checks: never fail the turn.
        logger.warning("Could not judge the grounding of an answer.", exc_info=True)
        return None
    unsupported = [claim for claim in report.claims if not claim.supported]
    if report.supported and not unsupported:
        return None
    if not unsupported:
        return WEAK_ANSWER_NOTE
    claim = _weakest(unsupported)
    more = len(unsupported) - 1
    others = f" (and {more} more sentence{'s' if more > 1 else ''})" if more else ""
    return f"{NOTE_PREFIX}: “{_shorten(claim.text)}”{others}"
