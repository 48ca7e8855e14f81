"""Header-aware chunking of knowledge-base documents into retrievable LlamaIndex nodes.

Markdown headers first (LlamaIndex `MarkdownNodeParser`: one section per header, so one FAQ question and its
answer per chunk), then a size cap in the encoder's own word pieces (`SentenceSplitter`) so that no chunk is
cut by the encoder's document length. Each chunk starts with the document title and its header path, which
keeps short FAQ answers findable by what they are about.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter
from llama_index.core.schema import TextNode

from colbert_att_assistant.knowledge_base.documents_io import KnowledgeDocument

# Leaves room for [CLS]/[SEP] and the title line inside the encoder's 300 word pieces.
DEFAULT_MAX_TOKENS = 256
CHUNK_OVERLAP_TOKENS = 32

Tokenize = Callable[[str], list]


def chunk_id(document_id: str, text: str) -> str:
    """Stable: the same text of the same document always gets the same id."""
    return f"{document_id}#{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def _sections(document: KnowledgeDocument) -> list[tuple[list[str], str]]:
    """(header path, section text without its header line) for every non-empty section."""
    parser = MarkdownNodeParser()
    sections = []
    for node in parser.get_nodes_from_documents([Document(text=document.body)]):
        lines = node.get_content().strip().splitlines()
        parents = [part for part in node.metadata.get("header_path", "/").split("/") if part]
        if lines and lines[0].startswith("#"):
            path = [*parents, lines[0].lstrip("#").strip()]
            content = "\n".join(lines[1:]).strip()
        else:
            path, content = parents, "\n".join(lines).strip()
        if content:
            sections.append((path, content))
    return sections


def chunk_document(
    document: KnowledgeDocument, tokenize: Tokenize, max_tokens: int = DEFAULT_MAX_TOKENS
) -> list[TextNode]:
    """The chunks of one document, in reading order, with their metadata."""
    nodes: list[TextNode] = []
    for header_path, content in _sections(document):
        # The title is the top header of most documents: do not repeat it in the path.
        path = header_path[1:] if header_path and header_path[0] == document.title else header_path
        heading = " > ".join([document.title, *path])
        budget = max(32, max_tokens - len(tokenize(heading)) - 2)
        if len(tokenize(content)) <= budget:
            pieces = [content]
        else:
            splitter = SentenceSplitter(chunk_size=budget, chunk_overlap=CHUNK_OVERLAP_TOKENS, tokenizer=tokenize)
            pieces = splitter.split_text(content)
        for piece in pieces:
            text = f"{heading}\n\n{piece}"
            node = TextNode(
                id_=chunk_id(document.id, text),
                text=text,
                metadata={
                    "document_id": document.id,
                    "title": document.title,
                    "header_path": " > ".join(path),
                    "audience": document.audience,
                    "category": document.category,
                    "source_path": document.source_path,
                    "chunk_index": len(nodes),
                },
            )
            nodes.append(node)
    return nodes
