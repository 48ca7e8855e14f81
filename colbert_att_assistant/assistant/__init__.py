"""The LLM answer generator: a conversation turn in, a cited answer or an honest "I don't know" out.

from colbert_att_assistant.assistant import Assistant, AssistantSettings
assistant = Assistant.from_settings(AssistantSettings.load())
answer = assistant.answer("How do I care for my calfskin wallet after it gets wet?")
"""

from colbert_att_assistant.assistant.chat import AnswerStream, Assistant, AssistantAnswer, Citation
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience, LLMBackend

__all__ = ["AnswerStream", "Assistant", "AssistantAnswer", "AssistantSettings", "Audience", "Citation", "LLMBackend"]
