"""Answers as Markdown for the staff page, and the compact citation label the API and the widget show. Everything
that came from a user, a document or the model is escaped: it is shown as text, never run."""

from __future__ import annotations

import html

from colbert_att_assistant.assistant import AssistantAnswer, Citation
from colbert_att_assistant.webapp.passages import compact_label, passage_url

__all__ = ["answer_markdown", "citation_label", "passage_url"]


def citation_label(citation: Citation) -> str:
    """Title and most specific heading, e.g. "Caring for Calfskin Leather · When a calfskin wallet gets wet"."""
    return compact_label(citation.title, citation.section)


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
