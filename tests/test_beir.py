"""The BEIR loader on well-formed and malformed files."""

import pytest

from colbert_att_assistant.retriever.beir import BeirDataset, DatasetFormatError, load_qrels

from .conftest import shared_datasets_dir


def write_dataset(folder, qrels_text, corpus_lines=None, query_lines=None):
    (folder / "qrels").mkdir(parents=True)
    corpus_lines = corpus_lines or [
        '{"_id": "d1", "title": "Pearls", "text": "Restring yearly."}',
        '{"_id": "d2", "text": "Wind daily."}',
    ]
    query_lines = query_lines or ['{"_id": "q1", "text": "pearls?"}', '{"_id": "q2", "text": "watch?"}']
    (folder / "corpus.jsonl").write_text("\r\n".join(corpus_lines) + "\r\n")
    (folder / "queries.jsonl").write_text("\n".join(query_lines) + "\n")
    (folder / "qrels" / "test.tsv").write_text(qrels_text)


def test_crlf_and_header_are_handled(tmp_path):
    write_dataset(tmp_path, "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t2\r\n")
    data = BeirDataset.load(tmp_path, "test")
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert data.corpus["d1"].full_text == "Pearls. Restring yearly."
    assert data.corpus["d2"].full_text == "Wind daily."


@pytest.mark.parametrize(
    ("qrels", "corpus", "message"),
    [
        (
            "query-id\tcorpus-id\tscore\nq9\td1\t1\n",
            None,
            r"test.tsv, line 2: query id 'q9' is not in queries",
        ),
        ("query-id\tcorpus-id\tscore\nq1\td9\t1\n", None, r"line 2: document id 'd9' is not in corpus"),
        ("q1\td1\n", None, r"line 1: expected 3 tab-separated fields"),
        ("q1\td1\thigh\n", None, r"relevance 'high' is not a number"),
        (
            "q1\td1\t1\n",
            ['{"_id": "d1", "text": "ok"}', '{"_id": "d2", "text": '],
            r"corpus.jsonl, line 2: not valid JSON",
        ),
        (
            "q1\td1\t1\n",
            ['{"_id": "d1", "text": "ok"}', '{"title": "no id", "text": "x"}'],
            r"line 2: missing field '_id'",
        ),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, qrels, corpus, message):
    write_dataset(tmp_path, qrels, corpus_lines=corpus)
    with pytest.raises(DatasetFormatError, match=message):
        BeirDataset.load(tmp_path, "test")


def test_the_shared_scifact_split_loads_when_present():
    datasets = shared_datasets_dir()
    if datasets is None:
        pytest.skip("the shared datasets are not on this machine")
    data = BeirDataset.load(datasets / "scifact", "test")
    assert len(data.corpus) == 5183 and len(data.queries) == 300
    assert sum(len(v) for v in data.qrels.values()) == 339
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_qrels(datasets / "scifact" / "qrels" / "dev.tsv")
