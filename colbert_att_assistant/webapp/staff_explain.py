"""Why a passage was found, as the staff page shows it: the passage in its original text with the words the query
matched highlighted, the one-line reason, and the token matches with their weights. The assistant works these out
(`assistant/explanations.py`, carried on each source of a staff answer); this module only writes the HTML."""

from __future__ import annotations

import html

from colbert_att_assistant.assistant import Citation
from colbert_att_assistant.assistant.explanations import MatchedWord, SourceExplanation
from colbert_att_assistant.webapp.passages import heading_length


def highlighted_text(text: str, words: list[MatchedWord], start: int = 0, end: int | None = None) -> str:
    """`text[start:end]` with matched words in <mark>, darker for a larger contribution relative to this passage's
    weakest and strongest match; the tooltip names the query words that chose each word."""
    end = len(text) if end is None else end
    strengths = [word.best for word in words]
    low, high = min(strengths, default=0.0), max(strengths, default=0.0)
    parts, cursor = [], start
    for word in words:
        if word.start < cursor or word.end > end:
            continue
        parts.append(html.escape(text[cursor : word.start]))
        level = (word.best - low) / (high - low) if high > low else 1.0
        title = ", ".join(f"{q.query_word} (cosine {q.cosine:.2f})" for q in word.queries)
        parts.append(
            f"<mark class='match' data-level='{round(level * 4)}' title='{html.escape(title, quote=True)}'>"
            f"{html.escape(text[word.start : word.end])}</mark>"
        )
        cursor = word.end
    parts.append(html.escape(text[cursor:end]))
    return "".join(parts)


def matches_table(explanation: SourceExplanation) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(row.query_word)}</td><td>{html.escape(row.passage_word)}</td>"
        f"<td>{row.cosine:.2f}</td><td>{row.query_attention:.1f}×</td><td>{row.passage_attention:.1f}×</td>"
        f"<td>{row.contribution:.3f}</td></tr>"
        for row in sorted(explanation.matches, key=lambda r: -r.contribution)
    )
    return (
        "<table class='matches'><thead><tr><th>query word</th><th>matched passage word</th><th>cosine</th>"
        "<th>query attention (× query mean)</th><th>passage attention (× passage mean)</th><th>contribution</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def explanation_html(source: Citation, explanation: SourceExplanation) -> str:
    """One source of a staff answer with why it was found."""
    text, words = source.text, explanation.matched_words
    body_start = heading_length(text, source.title, source.section)
    heading = f"{source.number}. {source.title or source.node_id}" + (f" · {source.section}" if source.section else "")
    # The chunk's heading is indexed with it and often holds the best matches: shown too, set apart.
    heading_line = (
        f"<span class='indexed-heading' title='Indexed with the passage'>"
        f"{highlighted_text(text, words, 0, body_start).rstrip()}</span>\n"
        if body_start
        else ""
    )
    return (
        f"<div class='passage'><h4>{html.escape(heading)} <span class='meta'>score {explanation.score:.2f} "
        f"({source.score:.2f} of the maximum) · {html.escape(source.audience)}</span></h4>"
        f"<p class='why'><strong>Why:</strong> {html.escape(explanation.why)}</p>"
        f"<div class='passage-text'>{heading_line}{highlighted_text(text, words, body_start)}</div>"
        f"<details><summary>token matches</summary>{matches_table(explanation)}</details></div>"
    )
