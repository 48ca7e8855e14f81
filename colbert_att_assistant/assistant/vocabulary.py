"""The words of the brand's documents, and what a client's message says beside them.

Misspelt words of a message are corrected toward the documents' words before searching:
"what condtioner should i use on my crocodle clutch" is searched as "what conditioner should i use on my crocodile
clutch". Word pieces of a misspelt word ("cr", "##oco", "##dle") match nothing in the passages that name the thing.

A word is corrected only when it is unknown both to an English word list (SymSpell's, shipped with `symspellpy`)
and to the documents, and a document word lies within one edit (two for words of seven letters or more); the most
frequent such word wins. Numbers, short words and capitalised words inside a sentence (names) are left alone.

Words the documents never use, in any form ("velvet", "wheelchair"), are listed too: a question about something the
documents do not cover is recognised by such a word finding nothing like itself in the passages retrieved
(`unknown_words.weakest_unknown_word`)."""

from __future__ import annotations

import importlib.resources
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache

import Stemmer
from symspellpy import SymSpell, Verbosity

from colbert_att_assistant.assistant.evidence import STOPWORDS
from colbert_att_assistant.retriever.index import BaseMultiVectorIndex

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)$")
MIN_LENGTH = 4
_stem = Stemmer.Stemmer("english").stemWord


@cache
def english_words() -> frozenset[str]:
    """SymSpell's English frequency list (82,765 words), words only."""
    listing = importlib.resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt"
    return frozenset(line.split(" ", 1)[0] for line in listing.read_text(encoding="utf-8").splitlines() if line)


class DocumentVocabulary:
    """The words of `document_texts`: corrects a message's misspelt words toward them, and finds its unknown words."""

    @classmethod
    def of_index(cls, index: BaseMultiVectorIndex, max_documents: int = 20_000) -> DocumentVocabulary:
        """The vocabulary of the documents in `index` (of its first `max_documents`: a large collection's
        vocabulary is settled long before its end, and reading every text of a million would take minutes)."""
        return cls(index.get(document_id).text for document_id in index.document_ids()[:max_documents])

    def __init__(self, document_texts: Iterable[str]):
        counts = Counter(word.lower() for text in document_texts for word in _WORD.findall(text))
        self.vocabulary = frozenset(counts)
        self.stems = frozenset(_stem(word) for word in counts)
        self._symspell = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for word, count in counts.items():
            if len(word) >= MIN_LENGTH - 1:
                self._symspell.create_dictionary_entry(word, count)

    def unknown_words(self, message: str) -> list[tuple[int, int, str]]:
        """(start, end, word) of each content word of `message` that the documents use in no form (by stem)."""
        return [
            (match.start(), match.end(), match.group())
            for match in _WORD.finditer(message)
            if len(match.group()) >= MIN_LENGTH
            and match.group().lower() not in STOPWORDS
            and _stem(match.group().lower()) not in self.stems
        ]

    def _known(self, word: str) -> bool:
        return word in self.vocabulary or word in english_words()

    def suggestion(self, word: str) -> str | None:
        """The document word meant by `word` (lower case), or None when it is known or nothing is near."""
        lower = word.lower()
        if len(lower) < MIN_LENGTH or self._known(lower) or (lower.endswith("'s") and self._known(lower[:-2])):
            return None
        distance = 2 if len(lower) >= 7 else 1
        found = self._symspell.lookup(lower, Verbosity.TOP, max_edit_distance=distance)
        return found[0].term if found and found[0].term != lower else None

    def correct(self, message: str) -> str:
        """`message` with each misspelt word replaced by its suggestion; everything else as written."""
        pieces: list[str] = []
        position = 0
        for match in _WORD.finditer(message):
            word = match.group()
            if word[0].isupper() and not _SENTENCE_START.search(message[: match.start()]):
                continue  # a capitalised word inside a sentence: a name the documents do not know is still a name
            replacement = self.suggestion(word)
            if replacement is not None:
                if word[0].isupper():
                    replacement = replacement[0].upper() + replacement[1:]
                pieces.append(message[position : match.start()])
                pieces.append(replacement)
                position = match.end()
        pieces.append(message[position:])
        return "".join(pieces)
