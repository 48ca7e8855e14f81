"""Reading knowledge-base documents: Markdown with YAML front matter, validated into `KnowledgeDocument`."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from colbert_att_assistant.paths import KNOWLEDGE_BASE_DIR
from colbert_att_assistant.retriever.errors import ColBERTAttError

DOCUMENTS_DIR = KNOWLEDGE_BASE_DIR / "documents"
FRONT_MATTER_FENCE = "---"


class KnowledgeBaseError(ColBERTAttError, ValueError):
    """A knowledge-base file cannot be used; the message names the file (and line where it applies)."""


class KnowledgeDocument(BaseModel):
    """One document of the knowledge base, as its front matter declares it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = Field(min_length=1)
    category: str = Field(min_length=1)
    audience: Literal["public", "internal"]
    products: list[str] = Field(default_factory=list)
    materials: list[str] = Field(default_factory=list)
    last_reviewed: dt.date
    body: str
    source_path: str

    @field_validator("body")
    @classmethod
    def _body_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the document has front matter but no text")
        return value


def parse_document(path: Path, root: Path) -> KnowledgeDocument:
    relative = path.relative_to(root).as_posix()
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise KnowledgeBaseError(
            f"{relative}, line {line}: not UTF-8 text (byte {exc.start}). Save the file as UTF-8."
        ) from exc
    if not text.strip():
        raise KnowledgeBaseError(f"{relative}: the file is empty.")
    lines = text.splitlines()
    if not lines or lines[0].strip() != FRONT_MATTER_FENCE:
        raise KnowledgeBaseError(f"{relative}, line 1: expected '---' to open the YAML front matter.")
    try:
        closing = next(i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER_FENCE)
    except StopIteration:
        raise KnowledgeBaseError(f"{relative}: the front matter opened on line 1 is never closed with '---'.") from None
    try:
        front = yaml.safe_load("\n".join(lines[1:closing]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 2}" if mark is not None else ""
        raise KnowledgeBaseError(f"{relative}{where}: front matter is not valid YAML ({exc}).") from exc
    if not isinstance(front, dict):
        raise KnowledgeBaseError(f"{relative}, line 2: front matter must be a mapping of keys to values.")
    try:
        return KnowledgeDocument(**front, body="\n".join(lines[closing + 1 :]), source_path=relative)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise KnowledgeBaseError(f"{relative}: invalid front matter ({problems}).") from exc
    except TypeError as exc:
        raise KnowledgeBaseError(f"{relative}: invalid front matter ({exc}).") from exc


def read_folder(folder: Path) -> tuple[list[KnowledgeDocument], list[str], set[str]]:
    """(valid documents, error messages, source paths of the files that failed)."""
    documents, errors, failed = [], [], set()
    seen: dict[str, str] = {}
    for path in sorted(folder.rglob("*.md")):
        relative = path.relative_to(folder).as_posix()
        try:
            document = parse_document(path, folder)
            if document.id in seen:
                raise KnowledgeBaseError(f"{relative}: id {document.id!r} is already used by {seen[document.id]}.")
        except KnowledgeBaseError as exc:
            errors.append(str(exc))
            failed.add(relative)
            continue
        seen[document.id] = relative
        documents.append(document)
    return documents, errors, failed


def read_corpus(path: Path) -> tuple[list[KnowledgeDocument], list[str], set[str]]:
    """A BEIR `corpus.jsonl` (`_id`, `title`, `text`) as public documents, one per record; like `read_folder`."""
    documents, errors, failed = [], [], set()
    reviewed = dt.date.fromtimestamp(path.stat().st_mtime)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                record = json.loads(line)
                title = str(record.get("title") or "").strip() or str(record["_id"])
                text = str(record["text"])
                documents.append(
                    KnowledgeDocument(
                        id=re.sub(r"[^a-z0-9-]+", "-", str(record["_id"]).lower()).strip("-") or f"record-{number}",
                        title=title,
                        category="article",
                        audience="public",
                        last_reviewed=reviewed,
                        body=text if text.lstrip().startswith(title) else f"# {title}\n\n{text}",
                        source_path=where,
                    )
                )
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                errors.append(f"{where}: not a corpus record with _id, title and text ({exc}).")
                failed.add(where)
    return documents, errors, failed


def read_documents(source: Path) -> tuple[list[KnowledgeDocument], list[str], set[str]]:
    """A folder of Markdown documents or a BEIR corpus.jsonl file."""
    if source.is_dir():
        return read_folder(source)
    if source.is_file() and source.suffix == ".jsonl":
        return read_corpus(source)
    raise KnowledgeBaseError(f"{source} is neither a folder of .md documents nor a BEIR corpus.jsonl file.")


def load_documents(root: Path = DOCUMENTS_DIR) -> list[KnowledgeDocument]:
    """Every `*.md` under `root`, validated; the first unreadable file (or duplicate id) is an error."""
    documents, errors, _ = read_folder(root)
    if errors:
        raise KnowledgeBaseError(errors[0])
    return documents
