"""The documents' words: spelling correction of a client's message toward them, and the words they never use."""

from __future__ import annotations

import pytest

from colbert_att_assistant.assistant.vocabulary import DocumentVocabulary

DOCUMENTS = [
    "Exotic leathers: use only the Exotic Leather Conditioner on crocodile and python. Never use the calfskin balm.",
    "The warranty on leather goods lasts two years. Bring the Orée bag and its receipt to a boutique.",
    "Cashmere jumpers: hand wash cold. Lay flat to dry. Moths dislike cedar.",
]


@pytest.fixture(scope="module")
def spelling() -> DocumentVocabulary:
    return DocumentVocabulary(DOCUMENTS)


@pytest.mark.parametrize(
    ("message", "meant"),
    [
        ("what condtioner for my crocodle clutch", "what conditioner for my crocodile clutch"),
        ("how long is the waranty on a calfskn bag?", "how long is the warranty on a calfskin bag?"),
        ("Cashmire jumper with moth holes", "Cashmere jumper with moth holes"),  # first word of the message
    ],
)
def test_misspelt_words_become_the_documents_words(spelling, message, meant):
    assert spelling.correct(message) == meant


@pytest.mark.parametrize(
    "message",
    [
        "my husband Siobhann wants to come along",  # a capitalised word inside a sentence is a name
        "does the velvet bag need a conditioner",  # English words the documents lack are not bent toward them
        "can i bring 2 bgs",  # short words and numbers are left alone
        "the orée bag's strap",  # the documents' own words, and their possessives
    ],
)
def test_names_known_words_and_short_words_are_kept(spelling, message):
    assert spelling.correct(message) == message


def test_a_word_far_from_every_document_word_is_kept(spelling):
    assert spelling.suggestion("xylophonic") is None
    assert spelling.correct("a zzqqv question") == "a zzqqv question"


def test_words_the_documents_never_use_in_any_form_are_unknown(spelling):
    message = "Can my velvet jumpers and my crocodile wallet be cleaned?"
    # "jumpers" is "jumper" in another form, and stop words and short words are never unknown.
    assert [word for _, _, word in spelling.unknown_words(message)] == ["velvet", "wallet", "cleaned"]
    start, end, _ = spelling.unknown_words(message)[0]
    assert message[start:end] == "velvet"
