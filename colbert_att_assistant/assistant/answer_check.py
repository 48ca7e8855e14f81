"""Each drafted sentence is checked before the client sees it: its citations must name a source, its numbers must
be in the passages it cites, and the grounding judge must find it supported by them. A sentence that fails is
dropped, not shown with a warning; a sentence in which the model declines is held back too, and the turn then
falls back on the evidence itself (see `chat.py`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from colbert_att_assistant.assistant.abstention import model_abstained
from colbert_att_assistant.assistant.citations import CITATION, NumberMismatch, attribute, numbers_in
from colbert_att_assistant.grounding import GroundingJudge

# A sentence ends at . ! ? followed by a space and a capital, or at a line break; "1." of a list is not an end.
_BOUNDARY = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*(?=\s+[A-Z\"'(\[*-])|\n+")
_LIST_MARKER = re.compile(r"^\W*\d+[.)]?$")
_STEP_NUMBER = re.compile(r"^\s*\d+[.)]\s+")


@dataclass
class SentenceVerdict:
    text: str  # the sentence as shown (invented citations removed, a citation attributed where it had none)
    shown: bool
    reason: str | None = None  # why it was dropped
    cited: list[int] = field(default_factory=list)
    support: float | None = None


@dataclass
class DraftCheck:
    """What became of every sentence of one drafted answer."""

    sentences: list[SentenceVerdict] = field(default_factory=list)
    removed_citations: list[int] = field(default_factory=list)
    attributed_citations: list[int] = field(default_factory=list)
    number_mismatches: list[NumberMismatch] = field(default_factory=list)
    declined: bool = False

    @property
    def shown(self) -> list[SentenceVerdict]:
        return [s for s in self.sentences if s.shown]

    @property
    def cited(self) -> list[int]:
        return list(dict.fromkeys(n for s in self.shown for n in s.cited))


class DraftChecker:
    """Checks sentences of one turn's draft against that turn's passages (numbered as in the prompt)."""

    def __init__(self, passages: Mapping[int, str], judge: GroundingJudge | None):
        self.passages = dict(passages)
        self.judge = judge
        self._evidence = (
            dict(zip(self.passages, judge.passages(list(self.passages.values())), strict=True))
            if (judge is not None and self.passages)
            else {}
        )
        self.result = DraftCheck()

    def check(self, sentence: str) -> SentenceVerdict:
        raw = sentence.strip()
        if not raw:
            return SentenceVerdict("", shown=False, reason="empty")
        if model_abstained(raw):
            self.result.declined = True
            return self._record(SentenceVerdict(raw, shown=False, reason="declined"))
        numbers = [int(n) for group in CITATION.findall(raw) for n in re.split(r"\s*,\s*", group)]
        valid = list(dict.fromkeys(n for n in numbers if n in self.passages))
        self.result.removed_citations += [n for n in numbers if n not in self.passages]
        text = CITATION.sub(lambda m: "".join(f"[{n}]" for n in _valid_in(m, self.passages)), raw)
        text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text).strip()
        if not valid:
            number = attribute(text, self.passages)
            if number is not None:
                valid = [number]
                self.result.attributed_citations.append(number)
                text = re.sub(r"([.!?]?)\s*$", rf" [{number}]\1", text, count=1)
        if not valid:
            return self._record(SentenceVerdict(text, shown=False, reason="no source"))
        # "2." opening a numbered step is the step's number, not a claim.
        claim_text = CITATION.sub("", _STEP_NUMBER.sub("", text)).strip()
        if _says_nothing(claim_text):
            return self._record(SentenceVerdict(text, shown=False, reason="no claim"))
        available = set().union(*(numbers_in(self.passages[n]) for n in valid))
        missing = sorted(numbers_in(claim_text) - available)
        if missing:
            self.result.number_mismatches += [
                NumberMismatch(sentence=text, number=m, cited_sources=valid) for m in missing
            ]
            return self._record(SentenceVerdict(text, shown=False, reason=f"numbers not in its sources: {missing}"))
        support = None
        if self.judge is not None and claim_text.strip(" .") and self._evidence:
            claim = self.judge.claims([claim_text])[0]
            support = max(self.judge.support(claim, self._evidence[n])[0] for n in valid)
            if support < self.judge.calibration.threshold:
                return self._record(
                    SentenceVerdict(text, shown=False, reason="not supported", cited=valid, support=support)
                )
        return self._record(SentenceVerdict(text, shown=True, cited=valid, support=support))

    def _record(self, verdict: SentenceVerdict) -> SentenceVerdict:
        self.result.sentences.append(verdict)
        return verdict

    def stream(self, deltas: Iterator[str]) -> Iterator[str]:
        """Checked sentences of a streamed draft, each yielded as soon as it is complete and passes."""
        buffer, separator, shown_any = "", "", False
        for delta in deltas:
            buffer += delta
            searched = 0
            while (match := _BOUNDARY.search(buffer, searched)) is not None:
                sentence = buffer[: match.end()]
                if _LIST_MARKER.match(sentence.strip()):
                    searched = match.end()  # "1." opens a numbered step: the sentence goes on
                    continue
                buffer, searched = buffer[match.end() :], 0
                verdict = self.check(sentence)
                if verdict.shown:
                    yield (separator if shown_any else "") + verdict.text
                    shown_any = True
                    separator = "\n" if "\n" in match.group(0) else " "
        if buffer.strip():
            verdict = self.check(buffer)
            if verdict.shown:
                yield (separator if shown_any else "") + verdict.text


def _says_nothing(claim: str) -> bool:
    """A bare citation ("[1]."), or a label such as "Sources:" that only announces what follows."""
    words = re.findall(r"\w+", claim)
    return not words or (claim.rstrip().endswith(":") and len(words) <= 2)


def _valid_in(match: re.Match[str], passages: Mapping[int, str]) -> list[int]:
    return [int(n) for n in re.split(r"\s*,\s*", match.group(1)) if int(n) in passages]
