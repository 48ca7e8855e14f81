"""The chat app on the Qdrant backend by one setting (ASSISTANT_RETRIEVAL__QDRANT__LOCATION, qdrant-client's local
mode in a folder), over real HTTP on localhost with the real encoder and model; opening the brand's index without
indexing, and the messages when there is none or qdrant-client is missing."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from app import start_assistant
from colbert_att_assistant.assistant import Assistant, AssistantSettings, Audience
from colbert_att_assistant.knowledge_base.documents_io import KnowledgeBaseError
from colbert_att_assistant.knowledge_base.ingest import main as ingest_main
from colbert_att_assistant.knowledge_base.ingest import open_brand_index
from colbert_att_assistant.retriever.index.qdrant_settings import QdrantNotInstalledError, QdrantSettings

DOCUMENTS = Path(__file__).resolve().parent.parent / "knowledge_base" / "documents"
# A few documents keep the indexing short; the question's answer is in the first.
SUBSET = ["faq/faq-delivery-tracking.md", "faq/faq-returns-exchanges.md", "care/care-calfskin.md",
          "internal/internal-discount-authority.md"]  # fmt: skip


def documents_folder(root: Path, names: list[str]) -> Path:
    folder = root / "documents"
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DOCUMENTS / name, folder / name)
    return folder


def settings_for(root: Path, documents: Path) -> AssistantSettings:
    return AssistantSettings.load(
        retrieval={"index_dir": str(root / "index"), "documents_dir": str(documents)}, llm={"threads": 2}
    )


def test_the_chat_app_answers_from_qdrant_by_one_setting(tmp_path, monkeypatch, encoder, chat_model, start_app):
    from colbert_att_assistant.retriever.index.qdrant_index import QdrantMultiVectorIndex

    monkeypatch.setenv("ASSISTANT_RETRIEVAL__QDRANT__LOCATION", str(tmp_path / "qdrant"))
    settings = settings_for(tmp_path, documents_folder(tmp_path, SUBSET))
    assert settings.retrieval.qdrant is not None and settings.retrieval.qdrant.location == str(tmp_path / "qdrant")
    assert settings.retrieval.answer_style == "quoted"  # the default: the best evidence lines, cited, no LLM call

    assistant = start_assistant(settings, chat_model, encoder)  # what app.py does before it serves
    try:
        assert isinstance(assistant.index, QdrantMultiVectorIndex) and len(assistant.index) > 5
        base, _, server, thread = start_app(assistant, tmp_path, rate_limit_messages=1000)
        try:
            assert httpx.get(f"{base}/healthz").json()["chunks"] == len(assistant.index)
            question = {"message": "How many days do I have to return a full-price item?"}
            reply = httpx.post(f"{base}/api/chat", json=question, timeout=180)
            assert reply.status_code == 200
            body = reply.json()
            assert not body["abstained"] and "30 days" in body["answer"], body
            assert body["citations"][0]["document_id"] == "faq-returns-exchanges"
            passage = httpx.get(base + body["citations"][0]["url"])
            assert passage.status_code == 200 and "full-price item" in passage.text
            # A customer never sees an internal document: the audience filter runs inside Qdrant.
            internal = httpx.post(
                f"{base}/api/chat", json={"message": "What discount can a boutique manager approve?"}, timeout=180
            ).json()
            assert all(not c["document_id"].startswith("internal-") for c in internal["citations"])
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        # Staff sources explain themselves on this backend too.
        query = encoder.encode_query("What discount can a boutique manager approve?")
        staff = assistant.retrieve(query, Audience.STAFF)
        assert staff[0].document_id == "internal-discount-authority" and staff[0].explanation.matched_words
    finally:
        assistant.index.close()  # the local folder is held by one client at a time

    # Later starts open the same collection; nothing is encoded again.
    reopened = open_brand_index(settings, encoder)
    try:
        assert isinstance(reopened, QdrantMultiVectorIndex) and len(reopened) > 5
    finally:
        reopened.close()


def test_the_ingest_command_indexes_where_the_settings_say(tmp_path, monkeypatch, encoder):
    from colbert_att_assistant.retriever.index.qdrant_index import QdrantMultiVectorIndex

    documents = documents_folder(tmp_path, ["care/care-calfskin.md"])
    monkeypatch.setenv("ASSISTANT_RETRIEVAL__QDRANT__LOCATION", str(tmp_path / "qdrant"))
    monkeypatch.setenv("ASSISTANT_RETRIEVAL__DOCUMENTS_DIR", str(documents))
    monkeypatch.setenv("ASSISTANT_RETRIEVAL__INDEX_DIR", str(tmp_path / "index"))
    command = typer.Typer(add_completion=False)
    command.command()(ingest_main)
    result = CliRunner().invoke(command, ["--from-settings"])
    assert result.exit_code == 0, result.output
    assert "chunks added" in result.output
    index = open_brand_index(AssistantSettings.load(), encoder)
    try:
        assert isinstance(index, QdrantMultiVectorIndex)
        assert {index.get(i).metadata["document_id"] for i in index.document_ids()} == {"care-calfskin"}
    finally:
        index.close()


def test_without_an_index_the_assistant_names_the_command_that_builds_it(tmp_path, monkeypatch, encoder):
    settings = settings_for(tmp_path, DOCUMENTS)
    with pytest.raises(
        KnowledgeBaseError, match=r"python -m colbert_att_assistant.knowledge_base\.ingest --documents .* --index-dir"
    ):
        Assistant.from_settings(settings, encoder=encoder)
    monkeypatch.setenv("ASSISTANT_RETRIEVAL__QDRANT__LOCATION", str(tmp_path / "qdrant"))
    with pytest.raises(KnowledgeBaseError, match=r"no Qdrant collection .* --from-settings"):
        Assistant.from_settings(settings_for(tmp_path, DOCUMENTS), encoder=encoder)
    monkeypatch.setenv("ASSISTANT_RETRIEVAL__QDRANT__LOCATION", ":memory:")
    with pytest.raises(KnowledgeBaseError, match="in memory.*index_brand_documents"):
        Assistant.from_settings(settings_for(tmp_path, DOCUMENTS), encoder=encoder)


def test_a_missing_qdrant_client_is_named_with_its_install_command(monkeypatch, encoder):
    from colbert_att_assistant.retriever.index.factory import new_index

    # As if the optional extra were not installed: importing qdrant_client fails.
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    monkeypatch.delitem(sys.modules, "colbert_att_assistant.retriever.index.qdrant_index", raising=False)
    monkeypatch.delitem(sys.modules, "colbert_att_assistant.retriever.index.qdrant_filters", raising=False)
    with pytest.raises(QdrantNotInstalledError, match=r'pip install -e "\.\[qdrant\]"'):
        new_index(encoder, qdrant=QdrantSettings())
    with pytest.raises(QdrantNotInstalledError, match="leave retrieval.qdrant unset"):
        QdrantSettings().client()
