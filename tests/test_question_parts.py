from colbert_att_assistant.assistant.question_parts import question_parts


def test_one_question_is_one_part():
    assert question_parts("How do I store my pearls?") == ["How do I store my pearls?"]
    assert question_parts("  shoud i tumble dry my linen  ") == ["shoud i tumble dry my linen"]


def test_two_question_sentences_are_two_parts():
    message = "What's the best way to store my silk scarf? And is it okay to iron it when it's creased?"
    assert question_parts(message) == [
        "What's the best way to store my silk scarf?",
        "And is it okay to iron it when it's creased?",
    ]


def test_a_second_question_inside_one_sentence_is_split_off():
    message = "How long does a calfskin strap last, and can I swap it for a new one myself?"
    assert question_parts(message) == ["How long does a calfskin strap last?", "can I swap it for a new one myself?"]


def test_statements_stay_in_front_of_every_part():
    message = "I bought a wallet second hand. Do you charge to check it, and where would the serial be?"
    assert question_parts(message) == [
        "I bought a wallet second hand. Do you charge to check it?",
        "I bought a wallet second hand. where would the serial be?",
    ]


def test_a_clause_too_short_to_search_alone_stays_with_its_neighbour():
    assert question_parts("ok and what about my lambskin Orée, same routine?") == [
        "ok and what about my lambskin Orée, same routine?"
    ]
    assert question_parts("Can I iron my silk scarf? Why?") == ["Can I iron my silk scarf? Why?"]


def test_a_statement_with_one_question_and_an_and_inside_a_noun_phrase_is_one_part():
    message = "Red wine on my cotton shirt and my lambskin bag. What should I do for each?"
    assert question_parts(message) == [message]


def test_more_parts_than_the_limit_are_answered_as_a_whole():
    message = "Can I wash silk at home? Can I iron it? Can I dry it in the sun? Can I store it in plastic?"
    assert question_parts(message) == [message]
