"""Table rows named by a value the client gives ("I'm a UK 8")."""

from __future__ import annotations

from colbert_att_assistant.assistant.table_rows import rows_named_by, value_mentions

SIZES = """Size guide > Women's clothing
Use this table as a starting point:

| FR | IT | UK | US | Letter |
|---|---|---|---|---|
| 34 | 38 | 6 | 2 | XS |
| 36 | 40 | 8 | 4 | S |
| 38 | 42 | 10 | 6 | M |
| 40 | 44 | 12 | 8 | L |

Always check the garment measurements on the product page too."""

RINGS = """Size guide > Rings
We size rings by inside circumference in millimetres (EU):

| EU (mm) | US | UK |
|---|---|---|
| 52 | 6 | L½ |
| 54 | 7 | N½ |"""


def test_numbers_come_with_the_words_beside_them():
    assert value_mentions("I'm a UK 8, or a 4,5 in US sizes") == [
        ("8", frozenset({"uk", "or"})),
        ("4.5", frozenset({"a", "in"})),
    ]


def test_a_value_in_one_row_only_names_that_row():
    (row,) = rows_named_by("im a size 54 in european rings, whats that in US?", [(1, SIZES), (2, RINGS)])
    assert (row.source_number, row.text) == (2, "EU (mm): 54; US: 7; UK: N½")


def test_the_column_named_beside_the_value_picks_between_rows():
    # 8 is a UK size in one row and a US size in another: "UK 8" names the first.
    (row,) = rows_named_by("I'm normally a UK 8, what is that in French sizes?", [(1, SIZES)])
    assert row.text == "FR: 36; IT: 40; UK: 8; US: 4; Letter: S"


def test_an_ambiguous_value_or_no_value_names_no_row():
    assert rows_named_by("Is a size 8 true to size?", [(1, SIZES)]) == []  # UK 8 or US 8: not guessed
    assert rows_named_by("How do the sizes run?", [(1, SIZES), (2, RINGS)]) == []
    assert rows_named_by("I ordered 3 rings", [(1, SIZES), (2, RINGS)]) == []  # no cell holds it
