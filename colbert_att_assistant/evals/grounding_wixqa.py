"""Validation of the grounding judge on WixQA expert answers: each answer against its own gold article(s)
(supported) and against another article (unsupported): the most BM25-similar other article (hard) and a random one.

The answers are split by a hash of their id into a fit part and a held-out part; with --fit the logistic
regression, the token-weighting settings (5-fold cross-validation inside the fit part) and both thresholds are
chosen on the fit part only and saved to grounding/calibration.json. All reported metrics are on the held-out part.

    python -m colbert_att_assistant.evals.grounding_wixqa [--limit N] [--fit]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from colbert_att_assistant.evals.perturb import change_number, swap_name, toggle_negation
from colbert_att_assistant.grounding.alignment import TokenEncoder, TokenWeighting, chunk_text
from colbert_att_assistant.grounding.calibration import (
    DEFAULT_CALIBRATION_PATH,
    AlignmentSettings,
    Calibration,
    load_calibration,
)
from colbert_att_assistant.grounding.claims import SentenceKind, split_sentences
from colbert_att_assistant.grounding.features import (
    FEATURE_NAMES,
    ClaimEvidence,
    ExactChecks,
    PassageEvidence,
    claim_evidence,
    exact_checks,
    pair_features,
    passage_evidence,
    union,
)
from colbert_att_assistant.grounding.judge import GroundingJudge, answer_supported
from colbert_att_assistant.grounding.lexical import fold, proper_names
from colbert_att_assistant.paths import PROJECT_ROOT
from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
from colbert_att_assistant.retriever.bm25 import BM25Baseline

REPO = PROJECT_ROOT
DEFAULT_DATASET = Path("/work/shared/datasets/wixqa")
ROLES = ("gold", "hard", "random")
# The support of a claim failing an exact check (missing figure or product name, flipped negation) is capped at this
# share of the claim threshold; the share is chosen on the fit part by answer-level AUC (every choice keeps such
# claims unsupported).
CAP_SHARES = (0.1, 0.25, 0.5, 0.75, 0.95)
WEIGHTINGS = (TokenWeighting.EXP_A, TokenWeighting.EXP_A_CONTENT)
STRONG_THRESHOLDS = (0.6, 0.7, 0.8)
# Inverse regularisation strengths tried by the same cross-validation (features are on 0..1 scales, ~3,000 rows).
REGULARIZATION_CS = (1.0, 3.0, 10.0)
ABLATIONS = {
    "alignment_only": ("align_mean", "align_strong"),
    "without_alignment": tuple(name for name in FEATURE_NAMES if not name.startswith("align_")),
    "without_bigram_recall": tuple(name for name in FEATURE_NAMES if name != "bigram_recall"),
    "all_features": FEATURE_NAMES,
}

app = typer.Typer(add_completion=False)
console = Console(stderr=True)


def fit_logistic(features: np.ndarray, labels: np.ndarray, c: float = 1.0) -> tuple[list[float], float]:
    """Coefficients and intercept of a lightly regularised logistic regression (features are on 0..1 scales)."""
    from sklearn.linear_model import LogisticRegression  # only fitting needs scikit-learn

    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(features, labels)
    return [float(c) for c in model.coef_[0]], float(model.intercept_[0])


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cut that maximises balanced accuracy (classes are unbalanced: two negatives per positive), placed
    midway between neighbouring scores."""
    values = np.unique(scores)
    candidates = (values[:-1] + values[1:]) / 2 if len(values) > 1 else values
    positives, negatives = labels == 1, labels == 0
    best, best_value = 0.5, -1.0
    for cut in candidates:
        predicted = scores >= cut
        value = (predicted[positives].mean() + (~predicted[negatives]).mean()) / 2
        if value > best_value:
            best, best_value = float(cut), float(value)
    return min(max(best, 1e-6), 1 - 1e-6)


@dataclass
class Item:
    """One expert answer with its claims and the articles it is compared with."""

    id: str
    fit: bool
    claims: list[str]
    articles: dict[str, list[str]] = field(default_factory=dict)  # role -> corpus ids


def in_fit_part(item_id: str, share: float) -> bool:
    """Deterministic split by a hash of the id (stable across runs, machines and Python versions)."""
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 16**8 < share


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_items(dataset: Path, limit: int | None, fit_share: float) -> tuple[dict[str, str], list[Item]]:
    corpus = {r["_id"]: f"{r['title']}\n{r['text']}" for r in _read_jsonl(dataset / "corpus.jsonl")}
    ids = sorted(corpus)
    bm25 = BM25Baseline(ids, [corpus[i] for i in ids], stemming=True)
    items: list[Item] = []
    for record in sorted(_read_jsonl(dataset / "answers.jsonl"), key=lambda r: r["_id"]):
        gold = [a for a in record.get("article_ids", []) if a in corpus]
        claims = [s.text for s in split_sentences(record["answer"]) if s.kind is SentenceKind.CLAIM]
        if not gold or not claims:
            continue
        # Hard negative: the other article most similar to the answer itself.
        ranked = bm25.search(" ".join(claims), k=len(gold) + 5)
        hard = next(i for i in sorted(ranked, key=ranked.get, reverse=True) if i not in gold)
        others = [i for i in ids if i not in gold and i != hard]
        seed = int(hashlib.sha256(f"random-negative:{record['_id']}".encode()).hexdigest()[:8], 16)
        item = Item(record["_id"], in_fit_part(record["_id"], fit_share), claims)
        item.articles = {"gold": gold, "hard": [hard], "random": [others[seed % len(others)]]}
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return corpus, items


@dataclass
class Rows:
    """One row per (answer, role, claim): features under one alignment setting, labels and bookkeeping."""

    features: np.ndarray
    failed_checks: np.ndarray  # a figure or product name missing, or a flipped negation: support is capped
    conflicted: np.ndarray  # the matching passage sentence states another figure, name or polarity: contradicted
    labels: np.ndarray  # 1: gold article, 0: another article
    item: np.ndarray  # index into items
    role: np.ndarray  # index into ROLES
    fit: np.ndarray


def exact_table(
    items: list[Item], claims: dict[str, ClaimEvidence], passages: dict[str, PassageEvidence]
) -> dict[tuple[int, str, str], ExactChecks]:
    """Encoder-independent checks per (answer, role, claim), computed once for every alignment setting."""
    table = {}
    for index, item in enumerate(items):
        for role in ROLES:
            evidence = union([passages[a] for a in item.articles[role]])
            for text in item.claims:
                table[index, role, text] = exact_checks(claims[text], evidence)
    return table


def build_rows(
    items: list[Item],
    claims: dict[str, ClaimEvidence],
    passages: dict[str, PassageEvidence],
    settings: AlignmentSettings,
    exact: dict[tuple[int, str, str], ExactChecks],
) -> Rows:
    features, failed, conflicted, labels, item_index, roles, fit = [], [], [], [], [], [], []
    for index, item in enumerate(items):
        for role_index, role in enumerate(ROLES):
            evidence = union([passages[a] for a in item.articles[role]])
            for text in item.claims:
                checks = exact[index, role, text]
                pair = pair_features(claims[text], evidence, settings.weighting, settings.strong_threshold, checks)
                features.append(pair.values)
                failed.append(bool(pair.failed_checks))
                conflicted.append(bool(pair.conflicts))
                labels.append(int(role == "gold"))
                item_index.append(index)
                roles.append(role_index)
                fit.append(item.fit)
    return Rows(
        np.array(features), np.array(failed), np.array(conflicted), np.array(labels), np.array(item_index),
        np.array(roles), np.array(fit),
    )  # fmt: skip


def claim_probabilities(
    rows: Rows,
    coefficients: Sequence[float],
    intercept: float,
    cap: float | None = None,
    columns: Sequence[int] | None = None,
) -> np.ndarray:
    """The regression's probabilities; with `cap`, claims failing an exact check are held at or below it (as the
    judge does)."""
    x = rows.features if columns is None else rows.features[:, columns]
    probability = 1.0 / (1.0 + np.exp(-(x @ np.asarray(coefficients) + intercept)))
    return probability if cap is None else np.where(rows.failed_checks, np.minimum(probability, cap), probability)


@dataclass
class AnswerScores:
    mean: np.ndarray
    minimum: np.ndarray
    any_failed_check: np.ndarray
    any_conflict: np.ndarray
    labels: np.ndarray
    role: np.ndarray
    fit: np.ndarray


def answer_scores(rows: Rows, probability: np.ndarray, mask: np.ndarray) -> AnswerScores:
    groups: dict[tuple[int, int], list[int]] = {}
    for position in np.flatnonzero(mask):
        groups.setdefault((int(rows.item[position]), int(rows.role[position])), []).append(int(position))
    keys = sorted(groups)
    return AnswerScores(
        mean=np.array([probability[groups[k]].mean() for k in keys]),
        minimum=np.array([probability[groups[k]].min() for k in keys]),
        any_failed_check=np.array([rows.failed_checks[groups[k]].any() for k in keys]),
        any_conflict=np.array([rows.conflicted[groups[k]].any() for k in keys]),
        labels=np.array([rows.labels[groups[k][0]] for k in keys]),
        role=np.array([k[1] for k in keys]),
        fit=np.array([rows.fit[groups[k][0]] for k in keys]),
    )


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(labels, scores)), 4) if len(set(labels.tolist())) == 2 else None


def auc_by_negative(scores: AnswerScores, values: np.ndarray) -> dict[str, float | None]:
    result = {"all_negatives": auc(scores.labels, values)}
    for role_index, role in enumerate(ROLES[1:], start=1):
        keep = (scores.role == 0) | (scores.role == role_index)
        result[f"{role}_negatives"] = auc(scores.labels[keep], values[keep])
    return result


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    positives, negatives = labels == 1, labels == 0
    return {
        "accuracy": round(float((predicted == labels.astype(bool)).mean()), 4),
        "balanced_accuracy": round(float((predicted[positives].mean() + (~predicted[negatives]).mean()) / 2), 4),
        "true_positive_rate": round(float(predicted[positives].mean()), 4),
        "true_negative_rate": round(float((~predicted[negatives]).mean()), 4),
    }


def cross_validated_auc(rows: Rows, folds: int = 5, c: float = 1.0) -> float:
    """Answer-level AUC of the regression refitted on 4/5 of the fit part's answers and scored on the rest."""
    fit_items = sorted(set(rows.item[rows.fit].tolist()))
    fold_of = {item: position % folds for position, item in enumerate(fit_items)}
    values = []
    for held_fold in range(folds):
        in_fold = np.array([fold_of.get(int(i), -1) == held_fold for i in rows.item])
        train = rows.fit & ~in_fold
        test = rows.fit & in_fold
        if not test.any():
            continue
        coefficients, intercept = fit_logistic(rows.features[train], rows.labels[train], c)
        scores = answer_scores(rows, claim_probabilities(rows, coefficients, intercept), test)
        value = auc(scores.labels, scores.mean)
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else float("nan")


def perturbation_flips(
    items: list[Item], judge: GroundingJudge, passages: dict[str, PassageEvidence], claims: dict[str, ClaimEvidence]
) -> dict[str, dict[str, float | int]]:
    """Held-out gold claims that the judge supports, edited (number, name, negation): how often the edit makes it
    unsupported against the same gold article(s), and how often the verdict is contradicted rather than merely
    unsupported."""
    threshold = judge.calibration.threshold
    name_pool = sorted({n.text for item in items for c in item.claims for n in proper_names(c) if n.multiword})
    edits: list[tuple[str, str, int]] = []  # (kind, edited claim, item index)
    for index, item in enumerate(items):
        if item.fit:
            continue
        evidence = union([passages[a] for a in item.articles["gold"]])
        for text in item.claims:
            if judge.support(claims[text], evidence)[0] < threshold:
                continue
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            foreign = [n for n in name_pool if fold(n) not in evidence.folded]
            candidates = {
                "number": change_number(text),
                "negation": toggle_negation(text),
                "name": swap_name(text, foreign[seed % len(foreign)]) if foreign else None,
            }
            edits += [(kind, edited, index) for kind, edited in candidates.items() if edited and edited != text]
    encoded = dict(zip([e[1] for e in edits], judge.tokens.claims([e[1] for e in edits]), strict=True))
    result: dict[str, dict[str, float | int]] = {}
    for kind in ("number", "name", "negation"):
        chosen = [(edited, index) for k, edited, index in edits if k == kind]
        flipped = contradicted = 0
        for edited, index in chosen:
            evidence = union([passages[a] for a in items[index].articles["gold"]])
            probability, features = judge.support(claim_evidence(edited, encoded[edited]), evidence)
            if probability < threshold:
                flipped += 1
                contradicted += bool(features.conflicts)
        result[kind] = {
            "edited_claims": len(chosen),
            "flipped": flipped,
            "flip_rate": round(flipped / max(1, len(chosen)), 4),
            "contradicted": contradicted,
            "contradicted_rate": round(contradicted / max(1, len(chosen)), 4),
        }
    return result


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip


@app.command()
def main(
    dataset: Path = typer.Option(DEFAULT_DATASET, help="WixQA folder (corpus.jsonl, answers.jsonl)."),
    limit: int | None = typer.Option(None, help="Use only the first N answers (by id), for quick runs."),
    fit: bool = typer.Option(False, "--fit", help="Fit and save the calibration on the fit part."),
    fit_share: float = typer.Option(0.5, help="Share of answers (by id hash) used for fitting."),
    calibration_path: Path = typer.Option(DEFAULT_CALIBRATION_PATH, help="Calibration to write (--fit) or read."),
    output: Path | None = typer.Option(
        None, help="Results JSON; default benchmarks/results/grounding_wixqa_<date>.json"
    ),
    save: bool = typer.Option(True, help="Write the results JSON (and the calibration with --fit)."),
    threads: int = typer.Option(2, help="torch threads for the encoder."),
) -> None:
    started = time.perf_counter()
    corpus, items = load_items(dataset, limit, fit_share)
    n_fit = sum(item.fit for item in items)
    console.print(f"{len(items)} answers ({n_fit} fit, {len(items) - n_fit} held out)")
    if n_fit == 0 or n_fit == len(items):
        raise typer.BadParameter("Both parts need answers: raise --limit or change --fit-share.")

    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    tokens = TokenEncoder(encoder, cache_size=len(corpus) + 1)
    article_ids = sorted({a for item in items for ids in item.articles.values() for a in ids})
    claim_texts = sorted({c for item in items for c in item.claims})
    n_chunks = sum(len(chunk_text(corpus[a], tokens.count_pieces)) for a in article_ids)
    with _progress() as progress:
        task = progress.add_task("encoding articles (chunks)", total=n_chunks)
        vectors = tokens.passages([corpus[a] for a in article_ids], lambda n: progress.advance(task, n))
        task = progress.add_task("encoding claims", total=len(claim_texts))
        claim_tokens = tokens.claims(claim_texts, lambda n: progress.advance(task, n))
    passages = {a: passage_evidence(corpus[a], v) for a, v in zip(article_ids, vectors, strict=True)}
    claims = {t: claim_evidence(t, c) for t, c in zip(claim_texts, claim_tokens, strict=True)}
    exact = exact_table(items, claims, passages)
    too_long_for_query = sum(tokens.count_pieces(t) + 2 > encoder.settings.query_max_tokens for t in claim_texts)

    # Alignment settings: chosen by cross-validation inside the fit part (with --fit), else the shipped ones.
    selection: dict[str, float] = {}
    if fit:
        grid = [
            AlignmentSettings(weighting=w, strong_threshold=s)
            for w, s in itertools.product(WEIGHTINGS, STRONG_THRESHOLDS)
        ]
        all_rows = {}
        choices: dict[str, tuple[AlignmentSettings, float]] = {}
        with _progress() as progress:
            task = progress.add_task("features and 5-fold CV per setting", total=len(grid))
            for settings in grid:
                key = f"{settings.weighting.value}@{settings.strong_threshold}"
                all_rows[key] = build_rows(items, claims, passages, settings, exact)
                for c in REGULARIZATION_CS:
                    selection[f"{key},C={c}"] = round(cross_validated_auc(all_rows[key], c=c), 4)
                    choices[f"{key},C={c}"] = (settings, c)
                progress.advance(task)
        best_key = max(selection, key=selection.get)  # before the cap entries join `selection`
        settings, regularization_c = choices[best_key]
        rows = all_rows[f"{settings.weighting.value}@{settings.strong_threshold}"]
        coefficients, intercept = fit_logistic(rows.features[rows.fit], rows.labels[rows.fit], regularization_c)
        raw = claim_probabilities(rows, coefficients, intercept)
        # Claim threshold: claims failing an exact check count as unsupported whatever their probability.
        threshold = best_threshold(np.where(rows.failed_checks, 0.0, raw)[rows.fit], rows.labels[rows.fit])
        for share in CAP_SHARES:
            capped = answer_scores(
                rows, claim_probabilities(rows, coefficients, intercept, share * threshold), rows.fit
            )
            selection[f"contradiction_cap={share}*threshold"] = auc(capped.labels, capped.mean) or 0.0
        cap_share = max(CAP_SHARES, key=lambda share: selection[f"contradiction_cap={share}*threshold"])
        fit_answers = answer_scores(
            rows, claim_probabilities(rows, coefficients, intercept, cap_share * threshold), rows.fit
        )
        answer_threshold = best_threshold(fit_answers.mean, fit_answers.labels)
        calibration = Calibration(
            feature_names=list(FEATURE_NAMES),
            coefficients=coefficients,
            intercept=intercept,
            threshold=threshold,
            answer_threshold=answer_threshold,
            contradiction_cap=cap_share * threshold,
            alignment=settings,
            regularization_c=regularization_c,
            encoder=f"{encoder.model_name} sha256:{encoder.weights_sha256[:16]}",
            fitted_on=f"WixQA expert answers, fit part ({n_fit} answers by sha256(id) < {fit_share}); claims vs gold "
            f"article (1), BM25-nearest other article and a random article (0); {int(rows.fit.sum())} claim pairs",
        )
    else:
        calibration = load_calibration(calibration_path)
        settings = calibration.alignment
        rows = build_rows(items, claims, passages, settings, exact)
        coefficients, intercept = calibration.coefficients, calibration.intercept

    held = ~rows.fit
    probability = claim_probabilities(rows, coefficients, intercept, calibration.contradiction_cap)
    answers = answer_scores(rows, probability, held)
    predicted = np.array([answer_supported([m], calibration) for m in answers.mean])
    predicted_strict = predicted & ~answers.any_failed_check  # a conflict always fails a check too
    ablations = {}
    for name, columns in ABLATIONS.items():
        index = [FEATURE_NAMES.index(c) for c in columns]
        coef, icpt = fit_logistic(
            rows.features[rows.fit][:, index], rows.labels[rows.fit], calibration.regularization_c
        )
        ablation_answers = answer_scores(
            rows, claim_probabilities(rows, coef, icpt, calibration.contradiction_cap, index), held
        )
        ablations[name] = auc_by_negative(ablation_answers, ablation_answers.mean)
    flips = perturbation_flips(items, GroundingJudge(calibration, encoder), passages, claims)
    claim_predicted = probability[held] >= calibration.threshold

    held_out = {
        "answer_auc_mean_support": auc_by_negative(answers, answers.mean),
        "answer_auc_min_support": auc_by_negative(answers, answers.minimum),
        "answer_supported_at_threshold": accuracy(answers.labels, predicted),
        "answer_strictly_supported": accuracy(answers.labels, predicted_strict),
        "claim_auc": auc(rows.labels[held], probability[held]),
        "claim_at_threshold": accuracy(rows.labels[held], claim_predicted),
        "gold_answers_with_a_failed_exact_check": round(float(answers.any_failed_check[answers.labels == 1].mean()), 4),
        "negative_answers_with_a_failed_exact_check": round(
            float(answers.any_failed_check[answers.labels == 0].mean()), 4
        ),
        # A contradiction found in an expert answer against its own gold article is a false alarm.
        "gold_claims_contradicted": round(float(rows.conflicted[held & (rows.labels == 1)].mean()), 4),
        "hard_negative_claims_contradicted": round(float(rows.conflicted[held & (rows.role == 1)].mean()), 4),
        "random_negative_claims_contradicted": round(float(rows.conflicted[held & (rows.role == 2)].mean()), 4),
    }
    if fit:
        calibration.held_out = {
            "answer_auc": held_out["answer_auc_mean_support"]["all_negatives"] or float("nan"),
            "answer_accuracy": held_out["answer_supported_at_threshold"]["accuracy"],
        }
    seconds = round(time.perf_counter() - started, 1)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}, Python {platform.python_version()}), "
        f"torch threads {threads}",
        "command": "python -m colbert_att_assistant.evals.grounding_wixqa " + " ".join(sys.argv[1:]),
        "dataset": str(dataset),
        "answers": {"total": len(items), "fit": n_fit, "held_out": len(items) - n_fit},
        "pairs": {
            "answer_level_held_out": len(answers.labels),
            "answer_level_held_out_positive": int(answers.labels.sum()),
            "claim_level_fit": int(rows.fit.sum()),
            "claim_level_held_out": int(held.sum()),
        },
        "claims_longer_than_query_max_tokens": f"{too_long_for_query} of {len(claim_texts)}",
        "calibration": json.loads(calibration.model_dump_json()),
        "feature_weights": dict(zip(FEATURE_NAMES, [round(c, 4) for c in coefficients], strict=True)),
        "alignment_selection_cv_auc": selection,
        "held_out": held_out,
        "ablations_held_out_answer_auc": ablations,
        "perturbations_held_out": flips,
        "seconds": seconds,
    }
    console.print_json(json.dumps({"held_out": held_out, "perturbations": flips, "seconds": seconds}))
    if save:
        if fit:
            calibration.save(calibration_path)
            console.print(f"calibration written to {calibration_path}")
        path = output or REPO / "benchmarks" / "results" / f"grounding_wixqa_{datetime.now(UTC):%Y-%m-%d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"results written to {path}")


if __name__ == "__main__":
    app()
