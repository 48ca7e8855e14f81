"""The evaluation command's plumbing on a tiny collection with hand-computed metrics, and its one-command table
over every standard collection (tiny stand-ins in tmp_path, the real encoder)."""

import json
import math

import pytest
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


def write_kb_dataset(folder):
    """The tiny collection in the knowledge base's format: labelled questions, two of them in the held-out half."""
    from colbert_att_assistant.evals.labelled_questions import LabelledQuestion

    def labelled(qid):
        return LabelledQuestion(id=qid, text="", type="paraphrase", answerable=True, audience="public")

    held_out = [q for q in (f"kb-{i}" for i in range(100)) if labelled(q).split == "held_out"][:2]
    calibration = next(q for q in (f"kb-{i}" for i in range(100)) if labelled(q).split == "calibration")
    ids = dict(zip(QUERIES, [*held_out, calibration], strict=True))
    write_dataset(folder)
    metadata = {"type": "paraphrase", "answerable": True, "audience": "public", "previous_turn": None}
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": ids[k], "text": v, "metadata": metadata}) + "\n" for k, v in QUERIES.items())
    )
    rows = [f"{ids[q]}\t{d}\t{r}" for q, docs in QRELS.items() for d, r in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")


def test_one_command_writes_a_row_per_collection_and_a_column_per_method(tmp_path):
    import typer

    from colbert_att_assistant.evals.retrieval import METHODS

    shared = tmp_path / "shared"
    for name in ("scifact", "wixqa", "msmarco-dl19-5k"):
        write_dataset(shared / name)
    write_kb_dataset(tmp_path / "kb")
    app = typer.Typer()
    app.command()(main)
    arguments = ["--shared-datasets", str(shared), "--kb-dataset", str(tmp_path / "kb")]
    arguments += ["--index-root", str(tmp_path / "indexes"), "--results-dir", str(tmp_path / "bench")]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output

    names = ["SciFact test", "WixQA", "knowledge base, held-out half", "MS MARCO DL19 5K"]
    section = (tmp_path / "bench" / "RESULTS.md").read_text()
    assert "retrieval evaluation: every collection, every method" in section and "load average" in section
    ndcg_table = section.split("ndcg@10 x 100:")[1].split("recall@100 x 100:")[0]
    header = next(line for line in ndcg_table.splitlines() if line.startswith("| collection"))
    assert [c.strip() for c in header.strip("|").split("|")][3 : 3 + len(METHODS)] == list(METHODS)
    for name in names:
        row = next(line for line in ndcg_table.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        assert len(cells) == 3 + len(METHODS) + 2  # name, queries, documents, methods, two differences
        assert all(float(v) >= 0 for v in cells[3:])

    recorded = json.loads(next((tmp_path / "bench" / "results").glob("*-eval-suite.json")).read_text())
    assert [c["name"] for c in recorded["collections"]] == names
    assert [c["queries"] for c in recorded["collections"]] == [3, 3, 2, 3]  # the knowledge base: its held-out half
    for collection in recorded["collections"]:
        assert set(collection["scores"]) == set(METHODS)
        # Every method finds the obvious answers of this tiny set.
        assert all(s["ndcg@10"] >= 50 for s in collection["scores"].values()), collection
    for folder in ("scifact", "wixqa", "kb_eval", "msmarco-dl19-5k"):
        assert (tmp_path / "indexes" / folder / "manifest.json").is_file()


def test_the_suite_refuses_a_missing_collection_before_encoding_anything(tmp_path):
    import typer

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--shared-datasets", str(tmp_path / "nowhere"), "--no-record"])
    assert result.exit_code != 0 and "nowhere" in result.output


def test_a_kept_index_follows_the_corpus(tmp_path, cached_encoder):
    from colbert_att_assistant.evals.retrieval import build_or_load_index
    from colbert_att_assistant.retriever.beir import CorpusDocument

    def dataset(texts):
        return BeirDataset(corpus={k: CorpusDocument(k, "", v) for k, v in texts.items()}, queries={}, qrels={})

    build_or_load_index(dataset(DOCS), cached_encoder, tmp_path, use_title=False)
    changed = {**{k: v for k, v in DOCS.items() if k != "d4"}, "d2": "Mechanical watches are serviced yearly."}
    index = build_or_load_index(dataset(changed), cached_encoder, tmp_path, use_title=False)
    assert sorted(index.document_ids()) == ["d1", "d2", "d3"]
    from colbert_att_assistant.retriever import MultiVectorIndex

    reloaded = MultiVectorIndex.load(tmp_path, encoder=cached_encoder)
    assert reloaded.get("d2").text == changed["d2"] and "d4" not in reloaded


def test_variants_match_what_an_index_built_with_the_setting_scores(cached_encoder):
    from colbert_att_assistant.evals.variants import VARIANTS, Variant, rescore, special_token_ids
    from colbert_att_assistant.retriever import ColBERTAttEncoder, MultiVectorIndex
    from colbert_att_assistant.retriever.settings import IndexSettings

    documents = [{"id": k, "text": v} for k, v in DOCS.items()]
    index = MultiVectorIndex(cached_encoder)
    index.add(documents)
    zero_settings = cached_encoder.settings.model_copy(update={"special_token_attention": "zero"})
    zero_encoder = ColBERTAttEncoder(zero_settings, checkpoint=cached_encoder.checkpoint)
    zero_index = MultiVectorIndex(zero_encoder, IndexSettings(encoder=zero_settings))
    zero_index.add(documents)
    special = special_token_ids(cached_encoder)
    assert set(special.tolist()) == {cached_encoder.tokenizer.cls_token_id, cached_encoder.tokenizer.sep_token_id}

    query = cached_encoder.encode_query(QUERIES["q2"])
    default = {h.id: h.score for h in index.search(query, top_k=4)}
    unchanged = rescore(index, query, list(default), Variant(zero_special_tokens=False), special)
    assert unchanged == pytest.approx(default, rel=1e-6)
    zeroed = rescore(index, query, list(default), VARIANTS["colbert_att_zero"], special)
    built = {h.id: h.score for h in zero_index.search(QUERIES["q2"], top_k=4)}
    assert zeroed == pytest.approx(built, rel=1e-5)
    assert zeroed != pytest.approx(default, rel=1e-6)  # [CLS] carries most of A: zeroing it changes the scores
    # The fused score adds 0.1 x (the query's weight mass x the pooled cosine), which is largest for the best match.
    pooled = rescore(index, query, list(default), VARIANTS["colbert_att_pooled"], special)
    whole = rescore(index, query, list(default), Variant(zero_special_tokens=False, pooled_weight=1.0), special)
    added = {i: pooled[i] - default[i] for i in default}
    assert added == pytest.approx({i: 0.1 * (whole[i] - default[i]) for i in default}, rel=1e-6)
    assert max(added, key=added.get) == "d3"
