"""Training (`retriever.training`) on a tiny slice of labelled pairs: the loss goes down, an interrupted run resumes
with the same next-step loss, the saved model loads into the retriever, and the compact export gives the same
vectors as the full save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings, MultiVectorIndex
from colbert_att_assistant.retriever.checkpoint import CheckpointLayout, inspect_checkpoint, load_checkpoint
from colbert_att_assistant.retriever.errors import CheckpointError
from colbert_att_assistant.retriever.training.cli import app
from colbert_att_assistant.retriever.training.config import (
    TrainingConfig,
    TrainingConfigError,
    build_config,
    read_config_file,
)
from colbert_att_assistant.retriever.training.train import METRICS_FILE, Trainer, train

RECIPES = Path(__file__).resolve().parent.parent / "colbert_att_assistant" / "retriever" / "training" / "recipes"

PAIRS = [
    (
        "How do I clean a calfskin wallet after it gets wet?",
        "Blot a wet calfskin wallet with a soft dry cloth, let it dry flat at room temperature away from radiators, "
        "then apply a neutral leather balm.",
        "Silk scarves should be hand washed in cold water with a mild detergent and never wrung.",
    ),
    (
        "Can silk scarves go in the washing machine?",
        "Silk scarves are hand washed in cold water with a mild detergent; never machine wash or wring them.",
        "Pearls are wiped with a soft damp cloth after wearing and stored flat in a pouch.",
    ),
    (
        "How should pearls be stored?",
        "Store pearls flat in a soft pouch, away from other jewellery that could scratch them; never hang them.",
        "A calfskin wallet that gets wet should be blotted and dried flat away from heat.",
    ),
    (
        "What is the return window for online orders?",
        "Online orders can be returned within 30 days of delivery, unworn and with all tags, for a full refund.",
        "Watches are serviced every five years by our certified watchmakers.",
    ),
    (
        "How often should a mechanical watch be serviced?",
        "A mechanical watch should be serviced by a certified watchmaker about every five years.",
        "Orders placed online may be returned within thirty days of delivery.",
    ),
    (
        "How do I remove a stain from suede shoes?",
        "Brush suede shoes gently with a suede brush and use a suede eraser on stains; avoid water.",
        "Lambskin bags are kept stuffed in their dust bag away from light.",
    ),
    (
        "How do I store a lambskin bag?",
        "Keep a lambskin bag stuffed with tissue paper in its dust bag, away from light, heat and humidity.",
        "Suede shoes are cleaned with a suede brush and a suede eraser.",
    ),
    (
        "Do you offer engraving on jewellery?",
        "Complimentary engraving of up to twelve characters is offered on rings, bracelets and pendants.",
        "Cashmere sweaters are folded, never hung, and stored with cedar.",
    ),
    (
        "How should cashmere sweaters be stored?",
        "Fold cashmere sweaters instead of hanging them, and store them with cedar blocks in a breathable bag.",
        "Engraving of up to twelve characters is free on rings and pendants.",
    ),
    (
        "Can I change the delivery address after ordering?",
        "The delivery address can be changed from your account until the order ships.",
        "Gold jewellery is polished with a soft cloth and kept away from perfume.",
    ),
    (
        "How do I polish gold jewellery?",
        "Polish gold jewellery with a soft lint-free cloth and keep it away from perfume and chlorine.",
        "Delivery addresses can be edited in your account until the parcel ships.",
    ),
    (
        "Is there a warranty on handbags?",
        "Every handbag carries a two-year warranty against defects in its hardware, stitching and lining.",
        "Leather belts are stored rolled, never folded, to avoid creases.",
    ),
]
QUERY_TOKENS, DOCUMENT_TOKENS = 24, 48
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Training tests run on one thread (the CI machine has two shared cores); the setting is put back after."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"query": q, "positive": p, "negatives": [n], "source": "house"} for q, p, n in PAIRS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def tiny_config(pairs_file: Path, output_dir: Path, **overrides) -> TrainingConfig:
    values = {
        "output_dir": str(output_dir),
        "mix": {},
        "pairs": [str(pairs_file)],
        "batch_size": 4,
        "hard_negatives": 1,
        "query_max_tokens": QUERY_TOKENS,
        "document_max_tokens": DOCUMENT_TOKENS,
        "max_steps": 3,
        "save_every": 100,
        "log_every": 1,
        "lr": 1e-4,
        "warmup_steps": 0,
        "validation": None,
        "num_threads": 1,
        "progress": False,
        **overrides,
    }
    return TrainingConfig(**values)


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / METRICS_FILE).read_text().splitlines()]


def test_training_steps_on_one_batch_lower_its_loss(pairs_file, tmp_path):
    trainer = Trainer(tiny_config(pairs_file, tmp_path / "run", temperature=1.0))
    batch = trainer.stream.next_batch(4)
    before = trainer.eval_loss(batch)
    losses = [trainer.train_step(batch) for _ in range(4)]
    after = trainer.eval_loss(batch)
    assert np.isfinite(losses).all()
    assert after < before - 1e-3, (before, after, losses)


@pytest.fixture(scope="module")
def uninterrupted(pairs_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("uninterrupted")
    return output, train(tiny_config(pairs_file, output))


def test_a_resumed_run_gives_the_same_next_step_loss(pairs_file, tmp_path, uninterrupted):
    _, full = uninterrupted
    config = tiny_config(pairs_file, tmp_path / "run", stop_after=2)
    first = train(config)
    assert sorted(first.losses) == [1, 2] and first.model_dir is None
    np.testing.assert_allclose([first.losses[1], first.losses[2]], [full.losses[1], full.losses[2]], atol=1e-6)
    with pytest.raises(TrainingConfigError, match="--resume"):
        train(config)  # a second fresh run into the same folder would mix two runs
    resumed = train(config.model_copy(update={"stop_after": None}), resume=True)
    assert sorted(resumed.losses) == [3]
    assert abs(resumed.losses[3] - full.losses[3]) < 1e-5, (resumed.losses[3], full.losses[3])
    events = [record["event"] for record in read_metrics(tmp_path / "run")]
    assert "checkpoint" in events and "resume" in events


def test_the_saved_model_loads_into_the_retriever_and_searches(uninterrupted):
    output, result = uninterrupted
    assert result.model_dir == output / "model"
    assert inspect_checkpoint(result.model_dir).layout is CheckpointLayout.PYLATE
    modules = json.loads((result.model_dir / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Dense"]
    settings = EncoderSettings(query_max_tokens=QUERY_TOKENS, document_max_tokens=DOCUMENT_TOKENS, num_threads=1)
    encoder = ColBERTAttEncoder(settings, checkpoint=load_checkpoint(str(result.model_dir)))
    assert encoder.dim == 384  # no projection: the Dense written for PyLate is an identity
    index = MultiVectorIndex(encoder)
    index.add([{"id": "pearls", "text": PAIRS[2][1]}, {"id": "watch", "text": PAIRS[4][1]}])
    hits = index.search("how often does my watch need a service", top_k=2)
    assert [hit.id for hit in hits] == ["watch", "pearls"]


@pytest.fixture(scope="module")
def projected(pairs_file, tmp_path_factory):
    """A run with a new 32-dim projection, ColBERT markers, query expansion, validation and the compact export."""
    output = tmp_path_factory.mktemp("projected")
    config = tiny_config(
        pairs_file,
        output,
        max_steps=2,
        save_every=2,
        projection_dim=32,
        pca_texts=16,
        markers="colbert",
        query_expansion=True,
        validation=str(pairs_file),
        val_queries=8,
        val_candidates=4,
        export_small=True,
    )
    return output, train(config)


def test_validation_is_logged_at_each_checkpoint(projected):
    output, result = projected
    validations = [r for r in read_metrics(output) if r["event"] == "validation"]
    assert [v["step"] for v in validations] == [2]
    assert 0.0 < validations[0]["mrr@10"] <= 1.0 and "ndcg@10" in validations[0]
    assert result.validation[-1]["mrr@10"] == validations[0]["mrr@10"]


def test_the_compact_export_gives_the_vectors_of_the_full_save(projected):
    _, result = projected
    assert inspect_checkpoint(result.compact_dir).layout is CheckpointLayout.COMPACT
    compact_bytes = sum(p.stat().st_size for p in result.compact_dir.iterdir())
    assert compact_bytes < 25e6
    manifest = json.loads((result.compact_dir / "colbert_att_compact.json").read_text())
    assert "embeddings.word_embeddings.weight" not in manifest["backbone_deltas"]  # frozen: from the package
    settings = EncoderSettings(query_max_tokens=QUERY_TOKENS, document_max_tokens=DOCUMENT_TOKENS, num_threads=1)
    full = ColBERTAttEncoder(settings, checkpoint=load_checkpoint(str(result.model_dir)))
    compact = ColBERTAttEncoder(settings, checkpoint=load_checkpoint(str(result.compact_dir)))
    assert full.dim == compact.dim == 32
    query = full.encode_query(PAIRS[0][0])
    tokens = full.token_strings(query.token_ids)
    assert tokens[:2] == ["[CLS]", "[unused0]"] and tokens[-1] == "[MASK]" and len(tokens) == QUERY_TOKENS
    for encode, text in (("encode_queries", PAIRS[0][0]), ("encode_documents", PAIRS[0][1])):
        a, b = getattr(full, encode)([text])[0], getattr(compact, encode)([text])[0]
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.vectors, b.vectors, atol=2e-3)
        np.testing.assert_allclose(a.weights, b.weights, atol=1e-4)
    # The compact file is checked against its manifest's sha256.
    weights = result.compact_dir / "compact.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(result.compact_dir))


def test_the_full_save_loads_in_the_pylate_layout_of_sentence_transformers(projected):
    """sentence-transformers' MultiVectorEncoder reads PyLate (v3) ColBERT folders; it gives our vectors."""
    multi_vector = pytest.importorskip("sentence_transformers.multi_vector_encoder")
    _, result = projected
    reader = multi_vector.MultiVectorEncoder(str(result.model_dir), device="cpu", local_files_only=True)
    settings = EncoderSettings(query_max_tokens=QUERY_TOKENS, document_max_tokens=DOCUMENT_TOKENS, num_threads=1)
    ours = ColBERTAttEncoder(settings, checkpoint=load_checkpoint(str(result.model_dir)))
    query, document = PAIRS[3][0], PAIRS[3][1]
    np.testing.assert_allclose(np.asarray(reader.encode_query([query])[0]), ours.encode_query(query).vectors, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(reader.encode_document([document])[0]), ours.encode_documents([document])[0].vectors, atol=1e-5
    )


def test_missing_data_and_bad_options_are_clear_errors(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    args = ["--mix", "none", "--pairs", str(missing), "--output-dir", str(tmp_path / "out"), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and str(missing) in result.output and "does not exist" in result.output
    result = runner.invoke(app, ["--mix", "squad=0.5,imagenet=0.5", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "imagenet" in result.output
    result = runner.invoke(app, ["--resume", "--output-dir", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "Nothing to resume" in result.output


def test_the_example_recipe_is_valid():
    recipe = RECIPES / "example.yaml"
    config = build_config(read_config_file(recipe), {"max_steps": 7})
    assert config.max_steps == 7 and config.mix["squad"] == 0.5 and config.negative_weight("medquad") == 0.5


def test_a_beir_train_split_gets_bm25_mined_negatives_that_exclude_judged_documents(tmp_path):
    from colbert_att_assistant.retriever.training.data import beir_source

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    # Judged positives d<i>, and the pairs' negatives as unjudged documents n<i> for BM25 to find.
    corpus = {**{f"d{i}": p for i, (_, p, _) in enumerate(PAIRS)}, **{f"n{i}": n for i, (_, _, n) in enumerate(PAIRS)}}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n" for doc_id, text in corpus.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, (q, _, _) in enumerate(PAIRS))
    )
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(PAIRS)))
    )
    rows = list(beir_source(folder, "train", weight=1.0, negative_weight=1.0, bm25_negatives=2).read())
    assert len(rows) == len(PAIRS)
    by_query = {row.payload["query"]: row.payload for row in rows}
    wallet = by_query[PAIRS[0][0]]
    assert wallet["positive"] == PAIRS[0][1]
    assert 1 <= len(wallet["negatives"]) <= 2 and PAIRS[0][1] not in wallet["negatives"]
    # The best BM25 negative is the unjudged passage about the same wet calfskin wallet.
    assert wallet["negatives"][0] == PAIRS[2][2]
    plain = list(beir_source(folder, "train", weight=1.0, negative_weight=1.0).read())
    assert all(row.payload["negatives"] == [] for row in plain)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")))
def test_every_recorded_recipe_is_valid(recipe):
    config = build_config(read_config_file(recipe), {})
    assert config.beir_dir is None or config.beir_split != "test"  # never trained on a test split


def test_the_training_code_imports_without_the_index_backends():
    """A training machine needs torch and transformers, not faiss or LlamaIndex."""
    import subprocess
    import sys

    probe = (
        "import sys; import colbert_att_assistant.retriever.training.train; "
        "import colbert_att_assistant.retriever.training.cli; "
        "print(sorted(m for m in ('faiss', 'llama_index', 'bm25s', 'ranx') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
