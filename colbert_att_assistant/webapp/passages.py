"""A cited passage as a reader sees it: the heading the chunker put in front of the text taken off, the Markdown
rendered (tables too) with raw HTML shown as text, and a compact label for citations."""

from __future__ import annotations

from urllib.parse import quote

from markdown_it import MarkdownIt

# CommonMark with tables; raw HTML in a document is escaped, and markdown-it refuses javascript: links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def passage_url(node_id: str) -> str:
    return f"/passages/{quote(node_id, safe='')}"


def last_section(section: str) -> str:
    """The most specific heading names the passage: "Know your calfskin > Smooth finishes" → "Smooth finishes"."""
    parts = [part.strip() for part in section.split(">") if part.strip()]
    return parts[-1] if parts else ""


def compact_label(title: str, section: str) -> str:
    """Title and most specific heading, e.g. "Caring for Calfskin Leather · When a calfskin wallet gets wet"."""
    tail = last_section(section)
    return f"{title} · {tail}" if tail and tail != title else title


def heading_length(text: str, title: str, section: str) -> int:
    """How many characters of `text` are the "Title > Section" heading the chunker put in front (0 if none)."""
    heading = " > ".join(part for part in (title, section) if part)
    for candidate in (heading, title):
        if candidate and text.startswith(candidate + "\n\n"):
            return len(candidate) + 2
    return 0


def passage_body(text: str, title: str, section: str) -> str:
    return text[heading_length(text, title, section) :]


def markdown_html(text: str) -> str:
    return _MARKDOWN.render(text)
