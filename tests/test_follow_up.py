"""Reading a turn in its conversation, without an LLM."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from colbert_att_assistant.assistant.follow_up import asks_something, standalone_question


def history(*turns: tuple[str, str]) -> list[ChatMessage]:
    return [
        message
        for question, answer in turns
        for message in (
            ChatMessage(role=MessageRole.USER, content=question),
            ChatMessage(role=MessageRole.ASSISTANT, content=answer),
        )
    ]


@pytest.mark.parametrize(
    ("message", "asks"),
    [
        ("I just bought the Nocturne leather jacket.", False),
        ("My bag is brown and I love it", False),
        ("is it waterproof", True),
        ("how do i clean sued shoes", True),
        ("Can I iron linen?", True),
        ("The strap broke, please help", True),
    ],
)
def test_a_statement_is_told_from_a_question(message, asks):
    assert asks_something(message) is asks


def test_a_follow_up_keeps_the_product_of_the_turn_before():
    earlier = history(("My alligator watch strap is worn at the holes.", "Thank you for telling me."))
    question = standalone_question("Can I order a replacement one?", earlier)
    assert "alligator" in question and "replacement" in question


def test_a_statement_then_its_question_is_one_intent():
    earlier = history(("I just bought the Nocturne leather jacket.", "What would you like to know?"))
    assert standalone_question("How should I hang it?", earlier).startswith("I just bought the Nocturne")


def test_a_new_self_contained_question_is_left_alone():
    earlier = history(("How do I clean suede loafers?", "Brush them [1]."))
    question = "What is your return window for full-price items bought online?"
    assert standalone_question(question, earlier) == question


def test_an_earlier_reply_is_never_carried_over():
    earlier = history(("How do I store pearls?", "I don't know based on our care guides."))
    assert "know" not in standalone_question("and my gold rings?", earlier)
