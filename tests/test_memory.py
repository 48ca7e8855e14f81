"""Conversation memory: the token budget, abstained turns, undo marks, and SQLite persistence across reopening."""

from __future__ import annotations

import pytest

from colbert_att_assistant.assistant.memory import NO_ANSWER_MARKER, SessionMemory, SQLiteMemory


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(params=["process", "sqlite"])
def memory(request, tmp_path):
    if request.param == "process":
        return SessionMemory(token_limit=50, count_tokens=words)
    return SQLiteMemory(tmp_path / "sessions.sqlite3", token_limit=50, count_tokens=words)


def test_history_keeps_questions_but_not_refusals(memory):
    memory.add_turn("s", "How do I store pearls?", "Keep them flat in a soft pouch [1].")
    memory.add_turn("s", "And opals?", "I don't know. Please ask an advisor.", abstained=True)
    history = memory.history("s")
    assert [m.role.value for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1].content == "Keep them flat in a soft pouch [1]."
    assert history[2].content == "And opals?"
    assert history[3].content == NO_ANSWER_MARKER
    assert all("don't know" not in (m.content or "") for m in history)


def test_the_oldest_turns_leave_the_budget_first(memory):
    for number in range(10):
        memory.add_turn("s", f"question {number} " + "word " * 5, f"answer {number} " + "word " * 5)
    history = memory.history("s")
    assert history and history[-1].content.startswith("answer 9")
    assert sum(words(m.content) for m in history) <= 50
    assert not any(m.content.startswith("question 0") for m in history)


def test_forget_after_rolls_a_session_back_to_a_mark(memory):
    memory.add_turn("s", "first?", "one")
    mark = memory.last_turn_id("s")
    memory.add_turn("s", "second?", "two")
    memory.add_turn("other", "elsewhere?", "three")
    assert memory.forget_after("s", mark) == 1
    assert [m.content for m in memory.history("s")] == ["first?", "one"]
    assert memory.history("other")  # another session is untouched
    assert memory.undo_last_turn("s") and memory.history("s") == []
    assert not memory.undo_last_turn("s")
    assert memory.last_turn_id("s") == 0


def test_sessions_are_separate_and_clear_forgets_one(memory):
    memory.add_turn("a", "mine?", "yes")
    memory.add_turn("b", "yours?", "no")
    memory.clear("a")
    assert memory.history("a") == [] and len(memory.history("b")) == 2
    assert memory.history(None) == []


def test_sqlite_memory_survives_reopening_and_stores_any_text(tmp_path):
    path = tmp_path / "sessions.sqlite3"
    first = SQLiteMemory(path, token_limit=100, count_tokens=words)
    first.add_turn("s", "Peut-on laver la soie ? 日本語 \ud800", "Non [1].")
    first.close()
    again = SQLiteMemory(path, token_limit=100, count_tokens=words)
    history = again.history("s")
    assert history[0].content.startswith("Peut-on laver la soie ? 日本語")
    assert history[1].content == "Non [1]."
