"""The typer CLI: build from a BEIR corpus or a folder, update in place, search, and bad input."""

import json

from typer.testing import CliRunner

from colbert_att_assistant.retriever.cli import app

runner = CliRunner()


def test_build_then_search_a_corpus(tmp_path, passages):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": p["id"], "title": "", "text": p["text"]}) + "\r\n" for p in passages[:25])
    )
    result = runner.invoke(
        app, ["build", "--corpus", str(corpus), "--index-dir", str(tmp_path / "idx"), "--limit", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "20 documents" in result.output
    query = " ".join(passages[7]["text"].split()[:10])
    result = runner.invoke(app, ["search", query, "--index-dir", str(tmp_path / "idx"), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert passages[7]["id"] in result.output.split("\n")[3]  # first row of the table
    # Building again with more documents updates the index in place.
    result = runner.invoke(app, ["build", "--corpus", str(corpus), "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code == 0 and "25 documents" in result.output and "generation 2" in result.output


def test_build_a_folder_and_filter(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pearls.md").write_text("# Pearls\nStore pearls flat; restring them every two years.")
    (docs / "watch.txt").write_text("A mechanical watch needs a full service every five to seven years.")
    result = runner.invoke(app, ["build", "--folder", str(docs), "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "search",
            "how often to service a watch",
            "--index-dir",
            str(tmp_path / "idx"),
            "--filter",
            "source_path=watch.txt",
        ],
    )
    assert result.exit_code == 0 and "watch.txt" in result.output and "pearls.md" not in result.output


def test_bad_input_exits_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["search", "anything", "--index-dir", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": \n')
    result = runner.invoke(app, ["build", "--corpus", str(bad), "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code == 2 and "line 2" in result.output
    result = runner.invoke(app, ["build", "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code == 2 and "exactly one of --corpus or --folder" in result.output


def test_build_compressed_and_convert(tmp_path, passages):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": p["id"], "title": "", "text": p["text"]}) + "\n" for p in passages))
    built = runner.invoke(
        app, ["build", "--corpus", str(corpus), "--index-dir", str(tmp_path / "pq"), "--vector-format", "residual_pq"]
    )
    assert built.exit_code == 0, built.output
    assert "residual_pq" in built.output
    manifest = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    assert manifest["vector_dtype"] == "residual_pq" and manifest["document_count"] == len(passages)

    runner.invoke(app, ["build", "--corpus", str(corpus), "--index-dir", str(tmp_path / "exact"), "--limit", "80"])
    converted = runner.invoke(
        app,
        [
            "convert",
            "--source-dir",
            str(tmp_path / "exact"),
            "--index-dir",
            str(tmp_path / "pruned"),
            "--prune-fraction",
            "0.25",
            "--codec",  # the option's earlier name still works
            "residual_pq",
        ],
    )
    assert converted.exit_code == 0, converted.output
    manifest = json.loads((tmp_path / "pruned" / "manifest.json").read_text())
    exact = json.loads((tmp_path / "exact" / "manifest.json").read_text())
    assert 0.7 < manifest["token_count"] / exact["token_count"] < 0.8  # a quarter of the tokens pruned
    # 48-byte codes per kept token (+ the .npy header); the bfloat16 vectors took 768.
    assert manifest["files"]["codes"]["bytes"] / manifest["token_count"] < 48.1
    assert exact["files"]["vectors"]["bytes"] / exact["token_count"] > 768
    refused = runner.invoke(
        app, ["convert", "--source-dir", str(tmp_path / "pq"), "--index-dir", str(tmp_path / "again")]
    )
    assert refused.exit_code == 2 and "bfloat16" in refused.output
