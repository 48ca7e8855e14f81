"""A damaged index is never served: every data file's sha256 is in the manifest and checked on load, a failure
names the file and says how to rebuild, the CLI says it in one line, and the knowledge base rebuilds itself from
its documents. Real encoder, real indexes on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_att_assistant.knowledge_base.ingest import ingest, load_or_rebuild
from colbert_att_assistant.retriever import IndexCorruptError, MultiVectorIndex
from colbert_att_assistant.retriever.index import DocumentInput
from colbert_att_assistant.retriever.index.integrity import Verification
from colbert_att_assistant.retriever.index.streaming_build import build_compressed_index
from colbert_att_assistant.retriever.settings import IndexSettings, StorageSettings

REPO = Path(__file__).resolve().parent.parent
KB_DOCUMENTS = ("care/care-pearls.md", "care/care-cashmere.md", "internal/internal-discount-authority.md")
REBUILD_COMMAND = "python -m colbert_att_assistant.knowledge_base.ingest --index-dir"


@pytest.fixture(scope="module")
def small_index(cached_encoder, passages) -> MultiVectorIndex:
    index = MultiVectorIndex(cached_encoder)
    index.add([DocumentInput(id=p["id"], text=p["text"], metadata={"audience": "public"}) for p in passages[:40]])
    return index


@pytest.fixture
def index_dir(small_index, tmp_path) -> Path:
    small_index.persist(tmp_path / "index")
    return tmp_path / "index"


@pytest.fixture
def kb_documents(tmp_path) -> Path:
    """Three real knowledge-base documents (two public care guides, one internal policy)."""
    folder = tmp_path / "documents"
    for relative in KB_DOCUMENTS:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "knowledge_base" / "documents" / relative, folder / relative)
    return folder


def data_file(directory: Path, key: str) -> Path:
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory / manifest["files"][key]["name"]


def overwrite_a_passage_with_same_size_garbage(directory: Path) -> tuple[str, str]:
    """Replace one passage's opening words by as many other letters, keeping the file valid JSON lines and its
    size: what a bad disk block or a stray write looks like. Returns (original words, garbage)."""
    path = data_file(directory, "documents")
    raw = path.read_bytes()
    first = json.loads(raw.splitlines()[0])
    original = first["text"][:40]
    assert original.isascii()
    garbage = "".join("Z" if c.isalnum() else c for c in original)
    damaged = raw.replace(json.dumps(original)[1:-1].encode(), json.dumps(garbage)[1:-1].encode(), 1)
    assert damaged != raw and len(damaged) == len(raw)
    path.write_bytes(damaged)
    return original, garbage


def strip_checksums(directory: Path) -> None:
    """Make the manifest what format 1 wrote: no checksums."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["format_version"] = 1
    for entry in manifest["files"].values():
        del entry["sha256"]
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_every_data_file_carries_its_sha256(index_dir):
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert set(manifest["files"]) == {"vectors", "weights", "token_ids", "faiss", "documents"}
    for entry in manifest["files"].values():
        assert entry["sha256"] == hashlib.sha256((index_dir / entry["name"]).read_bytes()).hexdigest()


def test_same_size_garbage_in_the_passages_is_refused_naming_the_file(index_dir, cached_encoder, caplog):
    original, garbage = overwrite_a_passage_with_same_size_garbage(index_dir)
    documents = data_file(index_dir, "documents")
    for verification in Verification:  # the passages file is hashed before load returns, whatever the mode
        with pytest.raises(IndexCorruptError) as refused:
            MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=verification)
        message = str(refused.value)
        assert str(documents) in message and "checksum mismatch" in message
        assert REBUILD_COMMAND in message and "\n" not in message
    # Without the checksums (an index written before them) the same damage loads and would be served as text:
    # the check above is what stops it.
    strip_checksums(index_dir)
    with caplog.at_level(logging.WARNING, logger="colbert_att_assistant.retriever.index.integrity"):
        unchecked = MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    assert "without verifying" in caplog.text
    assert any(garbage in unchecked.get(i).text for i in unchecked.document_ids())
    assert not any(original in unchecked.get(i).text for i in unchecked.document_ids())


def test_a_truncated_vectors_file_is_refused(index_dir, cached_encoder):
    vectors = data_file(index_dir, "vectors")
    size = vectors.stat().st_size
    with vectors.open("r+b") as handle:
        handle.truncate(size - 4096)
    with pytest.raises(
        IndexCorruptError, match=f"{vectors}: truncated \\({size - 4096} bytes, the manifest says {size}"
    ):
        MultiVectorIndex.load(index_dir, encoder=cached_encoder)


def test_damaged_vectors_fail_at_load_or_in_the_background_then_no_search_is_served(index_dir, cached_encoder):
    vectors = data_file(index_dir, "vectors")
    with vectors.open("r+b") as handle:  # same size, same .npy header: only the token vectors change
        handle.seek(vectors.stat().st_size // 2)
        handle.write(os.urandom(512))
    with pytest.raises(IndexCorruptError, match=f"{vectors}: checksum mismatch"):
        MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=Verification.FULL)
    # Background: load returns at once, the hash of the memory-mapped vectors runs in a thread.
    index = MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=Verification.BACKGROUND)
    with pytest.raises(IndexCorruptError, match="checksum mismatch"):
        index.wait_verified(timeout=60)
    with pytest.raises(IndexCorruptError, match=f"{vectors}: checksum mismatch"):
        index.search("immune response of T cells", top_k=3)


def test_a_sound_index_verified_in_the_background_searches(index_dir, cached_encoder, small_index):
    index = MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=Verification.BACKGROUND)
    assert index.wait_verified(timeout=60)
    query = "immune response of T cells"
    assert [h.id for h in index.search(query, top_k=5)] == [h.id for h in small_index.search(query, top_k=5)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "the manifest is not valid JSON"),
        (os.urandom(300) + b"\xff", "the manifest is not valid JSON"),
        (b'{"generation": 3, "files": []}', "the manifest does not describe a valid index"),
    ],
)
def test_a_garbage_manifest_is_one_clear_line(index_dir, cached_encoder, content, problem):
    (index_dir / "manifest.json").write_bytes(content)
    with pytest.raises(IndexCorruptError) as refused:
        MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    message = str(refused.value)
    assert message.startswith(f"{index_dir / 'manifest.json'}: {problem}")
    assert REBUILD_COMMAND in message and "\n" not in message


def test_an_index_without_checksums_loads_with_a_warning(index_dir, cached_encoder, small_index, caplog):
    strip_checksums(index_dir)
    with caplog.at_level(logging.WARNING, logger="colbert_att_assistant.retriever.index.integrity"):
        index = MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    assert "written before index files carried checksums" in caplog.text
    assert index.document_ids() == small_index.document_ids()
    # Its next write is format 2, with checksums.
    index.persist(index_dir)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and all(e["sha256"] for e in manifest["files"].values())


def test_a_rebuild_over_a_garbage_manifest_writes_a_new_generation(index_dir, small_index, cached_encoder):
    old_files = sorted(p.name for p in index_dir.glob("*.g*"))
    (index_dir / "manifest.json").write_text("garbage")
    # The manifest no longer says which generation is current; the files do, so nothing is written over them.
    assert small_index.persist(index_dir).generation == 2
    assert not set(old_files) & {p.name for p in index_dir.glob("*.g*")}
    assert len(MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=Verification.FULL)) == 40


def test_the_streaming_compressed_build_writes_checksums(cached_encoder, passages, tmp_path):
    settings = IndexSettings(
        encoder=cached_encoder.settings,
        storage=StorageSettings(vector_format="residual_pq", centroids=128, pq_rotation=False, training_tokens=8192),
    )
    directory = tmp_path / "compressed"
    manifest = build_compressed_index(
        (DocumentInput(**p) for p in passages[:60]), directory, cached_encoder, settings, batch_documents=20
    )
    assert manifest.has_checksums and {"codes", "centroid_ids", "documents", "list_slots"} <= manifest.files.keys()
    for entry in manifest.files.values():
        assert entry.sha256 == hashlib.sha256((directory / entry.name).read_bytes()).hexdigest()
    codes = directory / manifest.files["codes"].name
    with codes.open("r+b") as handle:  # the last 64 code bytes inverted
        handle.seek(codes.stat().st_size - 64)
        tail = handle.read(64)
        handle.seek(codes.stat().st_size - 64)
        handle.write(bytes(b ^ 0xFF for b in tail))
    index = MultiVectorIndex.load(directory, encoder=cached_encoder, verification=Verification.BACKGROUND)
    with pytest.raises(IndexCorruptError, match=f"{codes}: checksum mismatch"):
        index.wait_verified(timeout=60)


def test_load_or_rebuild_rebuilds_a_damaged_knowledge_base_and_answers(kb_documents, tmp_path, cached_encoder, caplog):
    index_dir = tmp_path / "kb-index"
    first = ingest(kb_documents, index_dir, encoder=cached_encoder)
    assert first.added > 3 and first.rebuilt_because is None
    original, garbage = overwrite_a_passage_with_same_size_garbage(index_dir)

    with caplog.at_level(logging.WARNING, logger="colbert_att_assistant.knowledge_base.ingest"):
        index, report = load_or_rebuild(kb_documents, index_dir, encoder=cached_encoder)
    assert "checksum mismatch" in report.rebuilt_because and "documents" in report.rebuilt_because
    assert f"Rebuilding {index_dir}" in caplog.text
    assert report.added == first.added  # every chunk encoded again from the documents
    texts = [index.get(i).text for i in index.document_ids()]
    assert any(original in text for text in texts) and not any(garbage in text for text in texts)
    hits = index.search("How should I store my pearl necklace?", top_k=3)
    assert hits and "pearl" in hits[0].text.lower()
    # What is on disk now is sound, and an unchanged folder then loads it without rebuilding.
    assert len(MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=Verification.FULL)) == len(index)
    _, again = load_or_rebuild(kb_documents, index_dir, encoder=cached_encoder)
    assert again.rebuilt_because is None and not again.changed

    (index_dir / "manifest.json").write_bytes(b"\x00" * 100)
    index, report = load_or_rebuild(kb_documents, index_dir, encoder=cached_encoder)
    assert "manifest is not valid JSON" in report.rebuilt_because
    assert len(index) == first.added and index.search("cashmere pilling", top_k=1)


def test_ingest_upgrades_a_knowledge_base_index_without_checksums(kb_documents, tmp_path, cached_encoder):
    index_dir = tmp_path / "kb-index"
    ingest(kb_documents, index_dir, encoder=cached_encoder)
    strip_checksums(index_dir)
    report = ingest(kb_documents, index_dir, encoder=cached_encoder)
    assert not report.changed and report.rebuilt_because is None  # nothing encoded, only written again
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and all(e["sha256"] for e in manifest["files"].values())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_cli_says_what_is_wrong_in_one_line(index_dir):
    overwrite_a_passage_with_same_size_garbage(index_dir)
    damaged = run_cli("colbert_att_assistant.retriever", "search", "--index-dir", str(index_dir), "immune response")
    assert damaged.returncode == 2 and damaged.stdout == ""
    assert damaged.stderr.strip().count("\n") == 0, damaged.stderr  # one line, however wide the terminal
    assert damaged.stderr.startswith("Error: ") and "checksum mismatch" in damaged.stderr
    assert str(data_file(index_dir, "documents")) in damaged.stderr and REBUILD_COMMAND in damaged.stderr

    (index_dir / "manifest.json").write_text("{not json")
    garbage = run_cli("colbert_att_assistant.retriever", "search", "--index-dir", str(index_dir), "immune response")
    assert garbage.returncode == 2 and garbage.stderr.strip().count("\n") == 0, garbage.stderr
    assert f"{index_dir / 'manifest.json'}: the manifest is not valid JSON" in garbage.stderr


# ---- the documents file, read on demand -------------------------------------------------------------------------


def rewrite_documents_without_checksums(directory: Path, edit) -> Path:
    """Rewrite the documents file's lines with `edit` in an index whose manifest has no checksums (format 1),
    keeping the manifest's sizes right: damage that only the line checks can catch."""
    path = data_file(directory, "documents")
    path.write_bytes(b"".join(edit(path.read_bytes().splitlines(keepends=True))))
    strip_checksums(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["documents"]["bytes"] = path.stat().st_size
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return path


def second_line(change):
    def edit(lines: list[bytes]) -> list[bytes]:
        return [lines[0], change(lines[1]), *lines[2:]]

    return edit


def edited(change):
    def line(raw: bytes) -> bytes:
        document = json.loads(raw)
        change(document)
        return (json.dumps(document, ensure_ascii=False) + "\n").encode()

    return line


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda raw: b"{not json\n", "line 2: not valid JSON"),
        (edited(lambda d: d.pop("text")), "line 2: a document line is malformed"),
        (edited(lambda d: d.update(n_tokens="12")), "line 2: a document line is malformed"),
        (edited(lambda d: d.update(slot=0)), "line 2: slot 0 is out of order (after slot 0"),
        (edited(lambda d: d.update(slot=10**6)), "line 2: slot 1000000 is out of order"),
    ],
)
def test_a_damaged_document_line_is_refused_naming_file_and_line(index_dir, cached_encoder, change, problem):
    path = rewrite_documents_without_checksums(index_dir, second_line(change))
    with pytest.raises(IndexCorruptError) as refused:
        MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    message = str(refused.value)
    assert f"{path}, {problem}" in message
    assert REBUILD_COMMAND in message and "\n" not in message


def test_a_repeated_document_id_is_refused(index_dir, cached_encoder, small_index):
    first = small_index.document_ids()[0]
    path = rewrite_documents_without_checksums(index_dir, second_line(edited(lambda d: d.update(id=first))))
    with pytest.raises(IndexCorruptError, match=f"{path}: document id '{first}' is on more than one line"):
        MultiVectorIndex.load(index_dir, encoder=cached_encoder)


def test_a_truncated_documents_file_is_refused(index_dir, cached_encoder):
    documents = data_file(index_dir, "documents")
    size = documents.stat().st_size
    with documents.open("r+b") as handle:
        handle.truncate(size - 100)
    with pytest.raises(
        IndexCorruptError, match=f"{documents}: truncated \\({size - 100} bytes, the manifest says {size}"
    ):
        MultiVectorIndex.load(index_dir, encoder=cached_encoder)


def test_a_documents_file_damaged_behind_a_loaded_index_is_a_clear_error(index_dir, cached_encoder, small_index):
    index = MultiVectorIndex.load(index_dir, encoder=cached_encoder, verification=Verification.FULL)
    ids = index.document_ids()
    documents = data_file(index_dir, "documents")
    # Another document's id written over the first line's, same size: never what the loaded row says.
    raw = documents.read_bytes()
    first_line = raw[: raw.index(b"\n")]
    swapped = first_line.replace(json.dumps(ids[0]).encode(), json.dumps(ids[0][::-1]).encode(), 1)
    assert swapped != first_line and len(swapped) == len(first_line)
    with documents.open("r+b") as handle:
        handle.write(swapped)
    with pytest.raises(IndexCorruptError, match=f"{documents}, line 1: changed since the index was loaded"):
        index.get(ids[0]).text  # noqa: B018
    # Cut short: the last passage is no longer there to read.
    with documents.open("r+b") as handle:
        handle.truncate(len(raw) - 10)
    with pytest.raises(IndexCorruptError, match=f"{documents}, line {len(ids)}: the file is shorter than"):
        index.get(ids[-1]).metadata  # noqa: B018
    # The passages in between still read as written.
    assert index.get(ids[1]).text == small_index.get(ids[1]).text


def test_the_documents_file_keeps_its_format_so_earlier_indexes_open_unchanged(index_dir, cached_encoder, small_index):
    # The same lines as every earlier writer (the index's persist and the streaming build): one JSON object per
    # document with these fields in this order. Reading texts on demand changed nothing on disk, so an index written
    # before it opens as it is, and earlier code opens indexes written now.
    lines = data_file(index_dir, "documents").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 40
    for line, document_id in zip(lines, small_index.document_ids(), strict=True):
        document = json.loads(line)
        assert list(document) == ["slot", "id", "n_words", "n_tokens", "text", "metadata"]
        assert document["id"] == document_id and document["text"] == small_index.get(document_id).text
    # A documents file with lines written as the code before this one wrote them (ensure_ascii=False, non-ASCII
    # text), in an index without checksums: texts come back byte for byte.
    accented = {document_id: f"Émail cloisonné {i} — 真珠" for i, document_id in enumerate(small_index.document_ids())}

    def with_accents(old: list[bytes]) -> list[bytes]:
        lines = [json.loads(line) for line in old]
        for line in lines:
            line["text"] = accented[line["id"]]
        return [(json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8") for line in lines]

    rewrite_documents_without_checksums(index_dir, with_accents)
    index = MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    assert {i: index.get(i).text for i in index.document_ids()} == accented
    assert {h.id: h.text for h in index.search("enamel", top_k=5)}.items() <= accented.items()
