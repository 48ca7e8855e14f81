"""The grounding judge: for each claim of an answer, the calibrated probability that its cited passages (and the
retrieved ones) support it, a verdict (supported, unsupported, contradicted; sentences with nothing to check are
no_claim), and ALCE-style citation recall and precision for the whole answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from colbert_att_assistant.grounding.alignment import TokenEncoder
from colbert_att_assistant.grounding.calibration import DEFAULT_CALIBRATION_PATH, Calibration, load_calibration
from colbert_att_assistant.grounding.claims import SentenceKind, restates_question, split_sentences
from colbert_att_assistant.grounding.features import (
    FEATURE_NAMES,
    ClaimEvidence,
    PairFeatures,
    PassageEvidence,
    claim_evidence,
    pair_features,
    passage_evidence,
    union,
)
from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings

logger = logging.getLogger(__name__)


class Verdict(StrEnum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"  # nothing it was checked against backs it (weak match, or a figure/name missing)
    CONTRADICTED = "contradicted"  # the matching passage text states another figure, product or polarity
    NO_CLAIM = "no_claim"  # on topic but nothing to check ("Our guide covers leather care."): never supported


class EvidenceScope(StrEnum):
    """What a claim is checked against for its verdict."""

    ANY = "any"  # its citations and every retrieved passage: did the model have the fact in front of it?
    OWN_CITATIONS = "own_citations"  # ALCE: only what it cites; the retrieved passages only when it cites nothing


class ClaimVerdict(BaseModel):
    text: str
    cited_numbers: list[int] = Field(description="Citation numbers written after the claim.")
    verdict: Verdict
    support: float = Field(description="Best support within the judge's evidence scope (the verdict's basis).")
    support_cited: float = Field(description="Support by the union of its cited passages; 0 without citations.")
    support_any: float = Field(
        description="Best support by its citations (together or alone) or any retrieved passage."
    )
    supported: bool = Field(description="`support` reaches the calibrated threshold (verdict is supported).")
    supported_by_citations: bool = Field(description="support_cited reaches the calibrated threshold.")
    best_passage: int | None = Field(description="Citation number of the cited passage that supports it best.")
    best_retrieved: int | None = Field(default=None, description="Index in `retrieved` of the best retrieved passage.")
    citation_support: dict[int, float] = Field(default_factory=dict, description="Support by each citation alone.")
    retrieved_support: list[float] = Field(default_factory=list, description="Support by each retrieved passage.")
    contradicted: bool = Field(
        default=False, description="Verdict is contradicted: a passage in scope states another figure, name, polarity."
    )
    failed_exact_check: bool = Field(
        default=False,
        description="Every passage in scope lacks one of its figures or product names, or flips its negation.",
    )
    reasons: list[str] = Field(default_factory=list)


class SkippedSentence(BaseModel):
    text: str
    kind: SentenceKind
    cited_numbers: list[int] = Field(default_factory=list)
    verdict: Verdict | None = Field(default=None, description="no_claim for sentences with nothing to check.")
    reason: str | None = None


class GroundingReport(BaseModel):
    scope: EvidenceScope = EvidenceScope.ANY
    claims: list[ClaimVerdict] = Field(description="The checkable claims.")
    skipped: list[SkippedSentence] = Field(default_factory=list, description="Greetings, abstentions, lead-ins.")
    no_claims: list[SkippedSentence] = Field(
        default_factory=list,
        description="Sentences with nothing to check (verdict no_claim): neither supported nor a grounded answer.",
    )
    citation_recall: float | None = Field(description="Share of claims supported by the union of their citations.")
    citation_precision: float | None = Field(description="Share of citations that support their claim (ALCE).")
    unsupported_rate: float | None = Field(description="Share of claims whose verdict is not supported.")
    answer_support: float | None = Field(description="Mean `support` over the claims.")
    contradicted_claims: int = Field(default=0, description="Claims whose verdict is contradicted.")
    supported: bool = Field(
        description="At least one checkable claim, and answer_support reaches the calibrated answer threshold "
        "(validated on WixQA)."
    )
    strictly_supported: bool = Field(
        description="supported, and no claim is contradicted or lacks a figure or name: for answers where one wrong "
        "price must block it."
    )


def answer_supported(supports: Sequence[float], calibration: Calibration) -> bool:
    """The answer-level verdict validated on WixQA: the mean of the claims' support reaches the answer threshold.
    An answer without a checkable claim is not a grounded answer, whatever else it says."""
    if not supports:
        return False
    return float(np.mean(supports)) >= calibration.answer_threshold


def _check_inputs(answer: object, cited: object, retrieved: object) -> None:
    if not isinstance(answer, str):
        raise ValueError(f"answer must be a string, got {type(answer).__name__}.")
    if not answer.strip():
        raise ValueError("answer is empty or whitespace: there is nothing to judge.")
    if not isinstance(cited, Mapping):
        raise ValueError(f"cited must map citation numbers to passage texts, got {type(cited).__name__}.")
    for number, text in cited.items():
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"cited keys must be citation numbers (int), got {number!r}.")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"cited passage [{number}] must be a non-empty string.")
    if retrieved is not None:
        if isinstance(retrieved, str) or not isinstance(retrieved, Sequence):
            raise ValueError("retrieved must be a list of passage texts or None.")
        for index, text in enumerate(retrieved):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"retrieved passage {index} must be a non-empty string.")


class GroundingJudge:
    def __init__(self, calibration: Calibration, encoder: ColBERTAttEncoder | None = None):
        self.calibration = calibration
        encoder = encoder or ColBERTAttEncoder(EncoderSettings(num_threads=2))
        if not calibration.encoder.startswith(f"{encoder.model_name} sha256:{encoder.weights_sha256[:16]}"):
            # Token similarities of another encoder are on another scale: the probabilities would be off.
            logger.warning(
                "Grounding calibration was fitted with %s, not this encoder (%s): refit it with "
                "`python -m colbert_att_assistant.evals.grounding_wixqa --fit`.",
                calibration.encoder,
                encoder.model_name,
            )
        self.tokens = TokenEncoder(encoder)

    @classmethod
    def load_default(cls, encoder: ColBERTAttEncoder | None = None) -> GroundingJudge:
        return cls.load(DEFAULT_CALIBRATION_PATH, encoder)

    @classmethod
    def load(cls, path: Path, encoder: ColBERTAttEncoder | None = None) -> GroundingJudge:
        return cls(load_calibration(path), encoder)

    # ---- evidence -----------------------------------------------------------------------------------------

    def claims(self, texts: Sequence[str]) -> list[ClaimEvidence]:
        return [claim_evidence(t, tokens) for t, tokens in zip(texts, self.tokens.claims(texts), strict=True)]

    def passages(self, texts: Sequence[str]) -> list[PassageEvidence]:
        return [passage_evidence(t, vectors) for t, vectors in zip(texts, self.tokens.passages(texts), strict=True)]

    def features(self, claim: ClaimEvidence, passage: PassageEvidence) -> PairFeatures:
        settings = self.calibration.alignment
        return pair_features(claim, passage, settings.weighting, settings.strong_threshold)

    def support(self, claim: ClaimEvidence, passage: PassageEvidence) -> tuple[float, PairFeatures]:
        """Calibrated probability of support; a failed exact check (a missing figure or product name, a flipped
        negation) caps it below the threshold."""
        features = self.features(claim, passage)
        probability = float(self.calibration.probability(features.values))
        if features.failed_checks:
            probability = min(probability, self.calibration.contradiction_cap)
        return probability, features

    # ---- public API ---------------------------------------------------------------------------------------

    def score_pair(self, claim: str, passage: str) -> float:
        """Calibrated probability that `passage` supports `claim`."""
        for name, value in (("claim", claim), ("passage", passage)):
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {type(value).__name__}.")
            if not value.strip():
                raise ValueError(f"{name} is empty or whitespace.")
        return self.support(self.claims([claim])[0], self.passages([passage])[0])[0]

    def judge(
        self,
        answer: str,
        cited: Mapping[int, str],
        retrieved: Sequence[str] | None = None,
        citations_per_claim: Sequence[Sequence[int]] | None = None,
        question: str | None = None,
        scope: EvidenceScope = EvidenceScope.ANY,
    ) -> GroundingReport:
        """Judge `answer` against its cited passages (`cited` maps "[n]" to passage text) and the retrieved passages.

        `scope` says what each claim's verdict rests on: everything (ANY, the default) or, ALCE-style, only the
        passages it cites, with the retrieved ones used only for a sentence that cites nothing (OWN_CITATIONS).
        `question`, when given, lets the judge recognise sentences that only restate it (verdict no_claim).
        `citations_per_claim` replaces the citations read from the text, one list per sentence that
        `split_sentences` marks as a claim, in order."""
        _check_inputs(answer, cited, retrieved)
        if question is not None and not isinstance(question, str):
            raise ValueError(f"question must be a string or None, got {type(question).__name__}.")
        scope = EvidenceScope(scope)
        sentences = split_sentences(answer)
        claim_sentences = [s for s in sentences if s.kind is SentenceKind.CLAIM]
        citations = [list(s.citations) for s in claim_sentences]
        if citations_per_claim is not None:
            if len(citations_per_claim) != len(claim_sentences):
                raise ValueError(
                    f"citations_per_claim has {len(citations_per_claim)} entries but the answer has "
                    f"{len(claim_sentences)} claims: {[s.text for s in claim_sentences]}"
                )
            citations = [[int(n) for n in numbers] for numbers in citations_per_claim]
        skipped = [
            SkippedSentence(text=s.text, kind=s.kind, cited_numbers=s.citations)
            for s in sentences
            if s.kind not in (SentenceKind.CLAIM, SentenceKind.NO_CLAIM)
        ]
        no_claims = [
            SkippedSentence(
                text=s.text, kind=s.kind, cited_numbers=s.citations, verdict=Verdict.NO_CLAIM,
                reason="a question" if s.text.rstrip(" .").endswith("?") else "about the sources, not the subject",
            )
            for s in sentences
            if s.kind is SentenceKind.NO_CLAIM
        ]  # fmt: skip
        checkable: list[tuple[str, list[int]]] = []
        for sentence, numbers in zip(claim_sentences, citations, strict=True):
            if question and question.strip() and restates_question(sentence.text, question):
                no_claims.append(
                    SkippedSentence(
                        text=sentence.text, kind=SentenceKind.NO_CLAIM, cited_numbers=numbers,
                        verdict=Verdict.NO_CLAIM, reason="restates the question",
                    )
                )  # fmt: skip
            else:
                checkable.append((sentence.text, numbers))
        retrieved = list(retrieved or [])
        numbers = sorted(cited)
        if not checkable:
            return GroundingReport(
                scope=scope, claims=[], skipped=skipped, no_claims=no_claims, citation_recall=None,
                citation_precision=None, unsupported_rate=None, answer_support=None, supported=False,
                strictly_supported=False,
            )  # fmt: skip
        evidence = self.passages([cited[n] for n in numbers] + retrieved)
        by_number = dict(zip(numbers, evidence[: len(numbers)], strict=True))
        retrieved_evidence = evidence[len(numbers) :]
        claims = self.claims([text for text, _ in checkable])
        verdicts: list[ClaimVerdict] = []
        relevant_citations, total_citations = 0, 0
        for claim, (_, claim_citations) in zip(claims, checkable, strict=True):
            verdict, relevant = self._judge_claim(claim, claim_citations, by_number, retrieved_evidence, scope)
            verdicts.append(verdict)
            relevant_citations += relevant
            total_citations += len(verdict.cited_numbers)
        n = len(verdicts)
        supports = [v.support for v in verdicts]
        supported = answer_supported(supports, self.calibration)
        contradicted = sum(v.contradicted for v in verdicts)
        failed = any(v.failed_exact_check for v in verdicts)
        return GroundingReport(
            scope=scope,
            claims=verdicts,
            skipped=skipped,
            no_claims=no_claims,
            citation_recall=sum(v.supported_by_citations for v in verdicts) / n,
            citation_precision=relevant_citations / total_citations if total_citations else None,
            unsupported_rate=sum(not v.supported for v in verdicts) / n,
            answer_support=float(np.mean(supports)),
            contradicted_claims=contradicted,
            supported=supported,
            strictly_supported=supported and not contradicted and not failed,
        )

    def _judge_claim(
        self,
        claim: ClaimEvidence,
        numbers: list[int],
        cited: dict[int, PassageEvidence],
        retrieved: list[PassageEvidence],
        scope: EvidenceScope = EvidenceScope.ANY,
    ) -> tuple[ClaimVerdict, int]:
        """The claim's verdict and how many of its citations are relevant (ALCE precision)."""
        threshold = self.calibration.threshold
        numbers = list(dict.fromkeys(numbers))
        reasons = [f"citation [{n}] names no passage" for n in numbers if n not in cited]
        valid = [n for n in numbers if n in cited]
        if not numbers:
            reasons.append("no citation")
        alone = {n: self.support(claim, cited[n]) for n in valid}
        if len(valid) > 1:
            together, together_features = self.support(claim, union([cited[n] for n in valid]))
        elif valid:
            together, together_features = alone[valid[0]]
        else:
            together, together_features = 0.0, None
        own = ([(together, together_features)] if together_features else []) + list(alone.values())
        from_retrieved = [self.support(claim, passage) for passage in retrieved]
        everything = own + from_retrieved
        if scope is EvidenceScope.ANY:
            candidates = everything
        elif numbers:
            candidates = own  # ALCE: a cited sentence stands or falls with what it cites
        else:
            # An uncited sentence may rest on any source that was shown (cited elsewhere in the answer or not).
            candidates = from_retrieved or [self.support(claim, passage) for passage in cited.values()]
        support = max((p for p, _ in candidates), default=0.0)
        support_any = max((p for p, _ in everything), default=0.0)

        # ALCE: a citation is relevant if it supports the claim alone, or if the claim loses the support of its
        # citations when it is removed.
        relevant = 0
        for n in valid:
            if alone[n][0] >= threshold:
                relevant += 1
            elif together >= threshold and len(valid) > 1:
                rest = [cited[m] for m in valid if m != n]
                if self.support(claim, union(rest))[0] < threshold:
                    relevant += 1

        supported = support >= threshold
        conflicts = list(dict.fromkeys(c for _, f in candidates for c in f.conflicts))
        verdict = Verdict.SUPPORTED if supported else Verdict.CONTRADICTED if conflicts else Verdict.UNSUPPORTED
        best_passage = max(valid, key=lambda m: alone[m][0]) if valid else None
        best_retrieved = int(np.argmax([p for p, _ in from_retrieved])) if from_retrieved else None
        best_features = max(candidates, key=lambda c: c[0])[1] if candidates else None
        if verdict is Verdict.CONTRADICTED:
            reasons += conflicts
        elif best_features is not None:
            if not supported:
                reasons += best_features.failed_checks or [_weak(best_features)]
        else:
            reasons.append("no passage to check it against")
        result = ClaimVerdict(
            text=claim.text,
            cited_numbers=numbers,
            verdict=verdict,
            support=support,
            support_cited=together,
            support_any=support_any,
            supported=supported,
            supported_by_citations=together >= threshold,
            best_passage=best_passage,
            best_retrieved=best_retrieved,
            citation_support={n: p for n, (p, _) in alone.items()},
            retrieved_support=[p for p, _ in from_retrieved],
            contradicted=verdict is Verdict.CONTRADICTED,
            failed_exact_check=bool(candidates) and all(f.failed_checks for _, f in candidates),
            reasons=reasons,
        )
        return result, relevant


def _weak(features: PairFeatures) -> str:
    values = dict(zip(FEATURE_NAMES, features.values, strict=True))
    return (
        f"weak support: token alignment {values['align_mean']:.2f}, "
        f"{values['lexical_recall']:.0%} of its content words in the passage"
    )
