"""The weakest unknown word of a question: a word the documents never use, and how well the passages match it."""

from __future__ import annotations

from colbert_att_assistant.assistant.unknown_words import weakest_unknown_word
from colbert_att_assistant.assistant.vocabulary import DocumentVocabulary

PASSAGES = [
    "Handbags > Cleaning\nWipe your handbag with a dry, soft cloth after each use; never use water on lambskin.",
    "Boutiques > Paris\nOur Paris boutique on rue Saint-Honoré opens Monday to Saturday, 10:00 to 19:00.",
]


def _weakest(encoder, message: str):
    vocabulary = DocumentVocabulary(PASSAGES)
    query = encoder.encode_query(message)
    similarities = [query.vectors @ document.vectors.T for document in encoder.encode_documents(PASSAGES)]
    return weakest_unknown_word(encoder, vocabulary, message, query, similarities)


def test_a_word_for_something_covered_matches_better_than_a_word_for_something_absent(encoder):
    covered = _weakest(encoder, "How do I wipe my lambskin purse?")
    absent = _weakest(encoder, "Paris boutique: wheelchair?")
    assert covered.word == "purse" and absent.word == "wheelchair"
    assert covered.similarity > absent.similarity + 0.2


def test_a_question_in_the_documents_own_words_has_no_unknown_word(encoder):
    weakest = _weakest(encoder, "Paris boutique opens Saturday?")  # "opens" is "open" in another form
    assert (weakest.word, weakest.similarity) == (None, 1.0)
