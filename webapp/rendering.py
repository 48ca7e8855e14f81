"""Answers and token-level explanations as Markdown / HTML for the two pages. Everything that came from a user,
a document or the model is escaped: it is shown as text, never run."""

from __future__ import annotations

import html
import math
from urllib.parse import quote

import numpy as np

from assistant import AssistantAnswer, Citation
from retriever.encoder import ColBERTAttEncoder
from retriever.index import MultiVectorIndex, SearchHit


def passage_url(node_id: str) -> str:
    return f"/passages/{quote(node_id, safe='')}"


def citation_label(citation: Citation) -> str:
    return f"{citation.title} — {citation.section}" if citation.section else citation.title


def answer_markdown(answer: AssistantAnswer, grounding_note: str | None = None) -> str:
    """The answer text, then its cited sources as links to the passages (title + section)."""
    text = html.escape(answer.text, quote=False)
    if grounding_note:
        text += f"\n\n*{html.escape(grounding_note, quote=False)}*"
    if answer.number_mismatches:
        numbers = ", ".join(sorted({m.number for m in answer.number_mismatches}))
        text += f"\n\n⚠️ *Please double-check: {html.escape(numbers)} could not be found in the cited sources.*"
    if answer.citations:
        links = [f"[{c.number}] [{html.escape(citation_label(c))}]({passage_url(c.node_id)})" for c in answer.citations]
        text += "\n\n**Sources**\n" + "\n".join(f"- {link}" for link in links)
    return text


def passage_page(citation_title: str, section: str, text: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(citation_title)}</title></head>"
        "<body style='font-family:sans-serif;max-width:46rem;margin:2rem auto'>"
        f"<h1>{html.escape(citation_title)}</h1><h2>{html.escape(section)}</h2>"
        f"<pre style='white-space:pre-wrap;font-family:inherit'>{html.escape(text)}</pre></body></html>"
    )


def _merge_pieces(pieces: list[str]) -> list[tuple[str, list[int]]]:
    """Word pieces back into words: [("calfskin", [3, 4]), ...] with the positions each word came from."""
    words: list[tuple[str, list[int]]] = []
    for position, piece in enumerate(pieces):
        if piece.startswith("##") and words:
            text, positions = words[-1]
            words[-1] = (text + piece[2:], [*positions, position])
        else:
            words.append((piece, [position]))
    return words


def explanation_html(
    hit: SearchHit, index: MultiVectorIndex, encoder: ColBERTAttEncoder, query_tokens: list[str]
) -> str:
    """Which query word matched which passage word, how closely, and with what attention weight.

    The passage is drawn from its indexed word pieces; a matched word is highlighted, darker for a larger
    contribution exp(A_q) · cos · exp(A_d)^δ, and its tooltip names the query tokens that chose it."""
    document = index.get(hit.id)
    pieces = encoder.token_strings(document.token_ids)
    matched_by: dict[int, list[tuple[str, float]]] = {}
    contributions = []
    for match in hit.matches:
        token = query_tokens[match.query_position]
        if token in ("[CLS]", "[SEP]", "[PAD]") or token.startswith("[unused"):
            continue
        contribution = math.exp(match.query_weight) * match.similarity * math.exp(match.document_weight)
        contributions.append(contribution)
        matched_by.setdefault(match.document_position, []).append((token, contribution))
    top = max(contributions, default=1.0)
    spans = []
    for word, positions in _merge_pieces(pieces):
        if word in ("[CLS]", "[SEP]"):
            continue
        hits = [item for position in positions for item in matched_by.get(position, [])]
        if not hits:
            spans.append(html.escape(word))
            continue
        strength = max(c for _, c in hits) / top
        title = ", ".join(f"{q} ({c:.2f})" for q, c in hits)
        spans.append(
            f"<mark class='match' style='background:rgba(214,140,30,{0.15 + 0.75 * strength:.2f})' "
            f"title='{html.escape(title, quote=True)}'>{html.escape(word)}</mark>"
        )
    rows = []
    for match in hit.matches:
        token = query_tokens[match.query_position]
        if token in ("[CLS]", "[SEP]", "[PAD]") or token.startswith("[unused"):
            continue
        rows.append(
            "<tr>"
            f"<td>{html.escape(token)}</td><td>{html.escape(pieces[match.document_position])}</td>"
            f"<td>{match.similarity:.3f}</td><td>{np.exp(match.query_weight):.3f}</td>"
            f"<td>{np.exp(match.document_weight):.3f}</td></tr>"
        )
    table = (
        "<table class='matches'><thead><tr><th>query token</th><th>matched passage token</th><th>cosine</th>"
        "<th>exp(A<sub>q</sub>)</th><th>exp(A<sub>d</sub>)</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    heading = f"{hit.metadata.get('title', hit.id)} — {hit.metadata.get('header_path', '')}"
    return (
        f"<div class='passage'><h4>{html.escape(heading)} · score {hit.score:.3f} "
        f"({hit.normalised_score:.2f}) · {html.escape(str(hit.metadata.get('audience', '')))}</h4>"
        f"<p>{' '.join(spans)}</p><details><summary>token matches</summary>{table}</details></div>"
    )
