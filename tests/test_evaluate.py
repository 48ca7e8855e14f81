"""The evaluation command's plumbing on a tiny collection with hand-computed metrics."""

import json
import math

from ranx import Qrels, Run, evaluate
from typer.testing import CliRunner

from colbert_att_assistant.evals.retrieval import main, run_methods
from colbert_att_assistant.retriever.beir import BeirDataset

DOCS = {
    "d1": "Pearls are restrung every two years with silk thread.",
    "d2": "A mechanical watch is serviced every five to seven years.",
    "d3": "Quartz watch batteries last about three years.",
    "d4": "Suede is brushed with a soft brush after rain.",
}
QUERIES = {"q1": "how often should pearls be restrung", "q2": "quartz watch battery life", "q3": "brushing suede"}
QRELS = {"q1": {"d1": 1}, "q2": {"d3": 1, "d2": 1}, "q3": {"d4": 1}}


def write_dataset(folder):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in DOCS.items())
    )
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    rows = [f"{q}\t{d}\t{r}" for q, docs in QRELS.items() for d, r in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")


def test_metrics_match_hand_computed_values():
    # q2 ranks one relevant document first and the other third: DCG = 1 + 1/log2(4), IDCG = 1 + 1/log2(3).
    run = Run({"q1": {"d2": 2.0, "d1": 1.0}, "q2": {"d3": 3.0, "d4": 2.0, "d2": 1.0}, "q3": {"d4": 1.0}})
    scores = evaluate(Qrels(QRELS), run, ["ndcg@10", "mrr@10", "recall@1"])
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert math.isclose(scores["ndcg@10"], (ndcg_q1 + ndcg_q2 + 1.0) / 3, rel_tol=1e-6)
    assert math.isclose(scores["mrr@10"], (0.5 + 1 + 1) / 3, rel_tol=1e-6)
    assert math.isclose(scores["recall@1"], (0 + 0.5 + 1) / 3, rel_tol=1e-6)


def test_every_method_runs_and_finds_the_obvious_answers(tmp_path, cached_encoder):
    write_dataset(tmp_path)
    data = BeirDataset.load(tmp_path, "test")
    from colbert_att_assistant.retriever import MultiVectorIndex

    index = MultiVectorIndex(cached_encoder)
    index.add([{"id": k, "text": v} for k, v in DOCS.items()])
    runs = run_methods(
        data, QUERIES, ["bm25_stemmed", "dense", "maxsim", "colbert_att", "hybrid"], cached_encoder, index, False
    )
    for name, run in runs.items():
        assert max(run["q1"], key=run["q1"].get) == "d1", name
        assert max(run["q3"], key=run["q3"].get) == "d4", name


def test_the_command_rejects_unknown_methods(tmp_path):
    write_dataset(tmp_path)
    import typer

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--dataset", str(tmp_path), "--methods", "bm25,splade", "--no-record"])
    assert result.exit_code != 0 and "splade" in result.output


def test_runs_are_recorded_as_json_and_a_dated_section(tmp_path):
    from colbert_att_assistant.evals.results_log import record_run, run_header

    result = {
        **run_header("python -m colbert_att_assistant.evals.retrieval --dataset x"),
        "scores": {"maxsim": 71.9},
    }
    path = record_run("eval-x-test", "evaluation: x test", result, ["", "| maxsim | 71.9 |"], directory=tmp_path)
    assert json.loads(path.read_text())["scores"] == {"maxsim": 71.9}
    section = (tmp_path / "RESULTS.md").read_text()
    assert f"## {result['date']} evaluation: x test" in section
    assert (
        "- command: `python -m colbert_att_assistant.evals.retrieval --dataset x`" in section
        and "| maxsim | 71.9 |" in section
    )
