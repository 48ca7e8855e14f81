"""The grounding report's summary: judged rows in, totals, a histogram of claim support and the RESULTS.md
section out (`grounding_report.py` asks and judges)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from colbert_att_assistant.evals.faithfulness import AgreementStats, agreement_stats

CLAIM_CHARS = 140  # unsupported claims quoted in RESULTS.md are cut to this length


# ---- totals ---------------------------------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(float(np.mean(present)), 4) if present else None


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def grounding_totals(rows: Sequence[dict]) -> dict:
    """Grounding of the answered questions among `rows` (abstentions have nothing to judge)."""
    answered = [r for r in rows if not r["abstained"]]
    claims = [c for r in answered for c in r["claims"]]
    return {
        "n_questions": len(rows),
        "n_answered": len(answered),
        "n_claims": len(claims),
        "citation_recall": _mean([r["citation_recall"] for r in answered]),
        "citation_precision": _mean([r["citation_precision"] for r in answered]),
        "unsupported_claim_rate": _share([not c["supported"] for c in claims]),
        "unsupported_rate_per_answer": _mean([r["unsupported_rate"] for r in answered]),
        "contradicted_claim_rate": _share([c["contradicted"] for c in claims]),
        "supported": _share([bool(r["supported"]) for r in answered]),
        "strictly_supported": _share([bool(r["strictly_supported"]) for r in answered]),
        "answers_without_claims": sum(not r["claims"] for r in answered),
        "no_claim_sentences": sum(len(r.get("no_claim_sentences", [])) for r in answered),
        "supported_own": _share([bool(r["supported_own"]) for r in answered if r.get("supported_own") is not None]),
        "cited_gold": _share([r["cited_gold"] for r in answered if r["cited_gold"] is not None]),
    }


def faithfulness_totals(rows: Sequence[dict]) -> dict | None:
    """The LLM evaluator against the judge on the answered rows that have an evaluator verdict field."""
    evaluated = [r for r in rows if not r["abstained"] and r.get("faithfulness") is not None]
    if not evaluated:
        return None
    llm = [r["faithfulness"]["passing"] for r in evaluated]
    seconds = [r["faithfulness"]["seconds"] for r in evaluated if r["faithfulness"]["passing"] is not None]
    return {
        "n_answers": len(evaluated),
        "n_errors": sum(v is None for v in llm),
        "mean_seconds": round(float(np.mean(seconds)), 2) if seconds else None,
        # The evaluator sees only the cited passages, as the judge does in own-citation scope.
        "vs_judge_own_citations": agreement_stats(
            (r["supported_own"], v) for r, v in zip(evaluated, llm, strict=True)
        ).model_dump(),
        "vs_judge_any_source": agreement_stats(
            (r["supported"], v) for r, v in zip(evaluated, llm, strict=True)
        ).model_dump(),
    }


def summarise(rows: Sequence[dict]) -> dict:
    totals = {"all": grounding_totals(rows)}
    labelled = [r for r in rows if r["answerable"] is not None]
    if labelled:
        answerable = [r for r in labelled if r["answerable"]]
        unanswerable = [r for r in labelled if not r["answerable"]]
        totals["answerable"] = grounding_totals(answerable)
        totals["unanswerable"] = grounding_totals(unanswerable)
        totals["abstention"] = {
            "accuracy_answerable": _share([bool(r["abstention_correct"]) for r in answerable]),  # answered
            "accuracy_unanswerable": _share([bool(r["abstention_correct"]) for r in unanswerable]),  # abstained
            "accuracy_all": _share([bool(r["abstention_correct"]) for r in labelled]),
            "n_answerable": len(answerable),
            "n_unanswerable": len(unanswerable),
        }
    reasons: dict[str, int] = {}
    for row in rows:
        if row["abstained"]:
            reasons[row["abstain_reason"]] = reasons.get(row["abstain_reason"], 0) + 1
    totals["abstain_reasons"] = reasons
    faithfulness = faithfulness_totals(rows)
    if faithfulness is not None:
        totals["faithfulness"] = faithfulness
    return totals


# ---- plot -----------------------------------------------------------------------------------------------------


def plot_support(rows: Sequence[dict], threshold: float, path: Path, title: str) -> None:
    """Histogram of claim support (support_any) over answered questions, split by answerability when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[tuple[str, list[float]]]
    if any(r["answerable"] is not None for r in rows):
        groups = [
            (label, [c["support"] for r in rows if r["answerable"] is flag and not r["abstained"] for c in r["claims"]])
            for label, flag in (("answerable questions", True), ("unanswerable questions", False))
        ]
    else:
        groups = [("all questions (no answerability label)", [c["support"] for r in rows for c in r["claims"]])]
    bins = np.linspace(0.0, 1.0, 21)
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for (label, values), colour in zip(groups, ("tab:blue", "tab:red"), strict=False):
        if values:
            axes.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{label}: {len(values)} claims")
        else:
            axes.plot([], [], color=colour, label=f"{label}: no answered claims")
    axes.axvline(threshold, color="black", linestyle="--", label=f"claim threshold {threshold:.3f}")
    axes.set_xlim(0, 1)
    axes.set_xlabel("claim support (calibrated probability, best over citations and shown sources)")
    axes.set_ylabel("claims")
    axes.set_title(title)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---- markdown -------------------------------------------------------------------------------------------------


def format_percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def format_number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_body(result: dict) -> list[str]:
    totals = result["totals"]
    groups = [g for g in ("all", "answerable", "unanswerable") if g in totals]
    load_start, load_end = result["load_average_start"], result["load_average_end"]
    body = [
        f"- questions: {result['questions']}"
        + (f" ({result['split']} split)" if result["questions"] == "kb" else f" (first {result['n_questions']})")
        + f", {result['n_questions']} asked; LLM {result['llm']}; index {result['index']}; top_k {result['top_k']}; "
        f"abstention gate {result['min_score_to_answer']}",
        f"- judge: claim threshold {result['judge']['threshold']:.3f}, answer threshold "
        f"{result['judge']['answer_threshold']:.3f}; claims are judged against their citations and every shown source",
        f"- load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_start)}, at end "
        f"{'/'.join(f'{x:.2f}' for x in load_end)} ({os.cpu_count()} cores); wall time "
        f"{result['wall_seconds'] / 60:.1f} min; peak RSS {result['peak_rss_mib']} MiB"
        + (
            f"; {result['rows_from_checkpoint']} questions were answered by an interrupted run (from its checkpoint)"
            if result.get("rows_from_checkpoint")
            else ""
        ),
        f"- plot of claim support: `{result['plot']}`",
        "",
        "| answered questions | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    lines = [
        ("questions / answered", lambda t: f"{t['n_questions']} / {t['n_answered']}"),
        ("claims judged", lambda t: str(t["n_claims"])),
        ("mean citation recall", lambda t: format_number(t["citation_recall"])),
        ("mean citation precision", lambda t: format_number(t["citation_precision"])),
        ("unsupported claims", lambda t: format_percent(t["unsupported_claim_rate"])),
        ("contradicted claims", lambda t: format_percent(t["contradicted_claim_rate"])),
        ("sentences with no checkable claim", lambda t: str(t.get("no_claim_sentences", "–"))),
        ("answers judged supported", lambda t: format_percent(t["supported"])),
        ("answers supported, own citations only", lambda t: format_percent(t.get("supported_own"))),
        ("answers strictly supported", lambda t: format_percent(t["strictly_supported"])),
        ("answers citing a gold document", lambda t: format_percent(t["cited_gold"])),
    ]
    for name, cell in lines:
        body.append(f"| {name} | " + " | ".join(cell(totals[g]) for g in groups) + " |")
    if "abstention" in totals:
        abstention = totals["abstention"]
        body += [
            "",
            f"- abstention accuracy: answerable {format_percent(abstention['accuracy_answerable'])} answered "
            f"(n={abstention['n_answerable']}), unanswerable {format_percent(abstention['accuracy_unanswerable'])} "
            f"declined (n={abstention['n_unanswerable']})",
        ]
    else:
        body += ["", "- abstention accuracy: not reported (no unanswerable label)"]
    reasons = totals["abstain_reasons"]
    body.append("- abstain reasons: " + (", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"))
    if "faithfulness" in totals:
        body += faithfulness_markdown(totals["faithfulness"], result["llm"], result["rows"])
    unsupported = [(r, c) for r in result["rows"] for c in r["claims"] if not c["supported"]]
    body += ["", f"<details><summary>unsupported claims ({len(unsupported)})</summary>", ""]
    body += ["| question | answerable | support | claim | reason |", "|---|---|---|---|---|"]
    for row, claim in unsupported:
        text = claim["text"] if len(claim["text"]) <= CLAIM_CHARS else claim["text"][: CLAIM_CHARS - 1] + "…"
        reason = "; ".join(claim["reasons"])
        answerable = "–" if row["answerable"] is None else ("yes" if row["answerable"] else "no")
        body.append(
            f"| {row['id']} | {answerable} | {claim['support']:.3f} | {text.replace('|', '/')} | "
            f"{reason.replace('|', '/')} |"
        )
    body += ["", "</details>"]
    return body


def confusion_markdown(stats: AgreementStats, judge_label: str) -> list[str]:
    return [
        f"| {judge_label} | LLM: YES | LLM: NO |",
        "|---|---|---|",
        f"| judge: supported | {stats.both_supported} | {stats.judge_only} |",
        f"| judge: not supported | {stats.llm_only} | {stats.neither} |",
    ]


def faithfulness_markdown(totals: dict, llm: str, rows: Sequence[dict]) -> list[str]:
    own = AgreementStats.model_validate(totals["vs_judge_own_citations"])
    anywhere = AgreementStats.model_validate(totals["vs_judge_any_source"])
    kappa = "–" if own.cohen_kappa is None else f"{own.cohen_kappa:.2f}"
    body = [
        "",
        f"LlamaIndex `FaithfulnessEvaluator` ({llm}, cited passages as contexts) beside the offline judge: "
        f"{totals['n_answers']} answers, {totals['n_errors']} evaluator errors, "
        f"{totals['mean_seconds'] if totals['mean_seconds'] is not None else '–'} s per evaluation on average.",
        "",
        f"- agreement with the judge's own-citation verdict: {format_percent(own.agreement)} of {own.n} "
        f"(Cohen's kappa {kappa}); with its any-source verdict: {format_percent(anywhere.agreement)} of {anywhere.n}",
        "",
        *confusion_markdown(own, "own citations"),
        "",
        "<details><summary>per answer</summary>",
        "",
        "| question | answer support | judge (own citations) | judge (any source) | LLM | LLM reply |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = row.get("faithfulness")
        if row["abstained"] or verdict is None:
            continue
        llm_cell = "error" if verdict["passing"] is None else ("YES" if verdict["passing"] else "NO")
        reply = (verdict["error"] or verdict["feedback"] or "").replace("|", "/").replace("\n", " ")[:80]
        body.append(
            f"| {row['id']} | {format_number(row['answer_support'])} | {_yes_no(row.get('supported_own'))} | "
            f"{_yes_no(row['supported'])} | {llm_cell} | {reply} |"
        )
    return [*body, "", "</details>"]


def _yes_no(value: bool | None) -> str:
    return "–" if value is None else ("supported" if value else "not supported")
