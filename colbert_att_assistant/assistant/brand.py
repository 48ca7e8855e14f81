"""The house the assistant speaks for: its name, tone, contacts, documents and every client-facing string, read
from one YAML profile (`brands/*.yaml`) and validated. Nothing house-specific is written in code or prompts."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from colbert_att_assistant.assistant.errors import SettingsError
from colbert_att_assistant.paths import BRANDS_DIR

DEFAULT_PROFILE = BRANDS_DIR / "maison-corvane.yaml"


class BrandContacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str | None = None
    email: str | None = None
    live_chat_hours: str | None = None
    help_url: str | None = None


class BrandStyle(BaseModel):
    """How the customer widget looks: colours as CSS values, a typeface stack, an optional logo URL."""

    model_config = ConfigDict(extra="forbid")

    primary_colour: str = "#1f1f1f"
    accent_colour: str = "#8a6d3b"
    background_colour: str = "#faf8f5"
    text_colour: str = "#1f1f1f"
    typeface: str = "Georgia, 'Times New Roman', serif"
    logo_url: str | None = None
    on_primary_colour: str = Field(default="#ffffff", description="Text on primary-coloured buttons.")


class CustomerStrings(BaseModel):
    """What the client reads besides the answers."""

    model_config = ConfigDict(extra="forbid")

    page_title: str
    notice: str = Field(description="The AI notice shown above the chat.")
    input_placeholder: str = "Ask about care, delivery, returns…"
    examples: list[str] = Field(default_factory=list)
    abstain: str = Field(description="Said instead of an answer the sources cannot support.")
    empty_message: str = "Your message seems to be empty. How can I help you today?"
    not_text: str = "I can only read text messages. Please type your question."
    too_long: str = "Your message is {length:,} characters long; I can read up to {limit:,}. Could you shorten it?"
    extractive_lead: str = Field(
        default="Here is what our guides say:", description="Heads an answer quoted from the sources."
    )
    # The widget's own words.
    panel_subtitle: str = Field(default="Client Care", description="Under the house's name in the widget header.")
    launcher_label: str = Field(default="Chat with Client Care", description="The launcher button's label.")
    talk_to_person: str = "Talk to a person"
    new_conversation: str = "New conversation"
    sources_heading: str = "Sources"
    back_to_chat: str = "Back to the conversation"
    feedback_question: str = "What was missing or wrong?"
    feedback_thanks: str = "Thank you for your feedback."


class BrandProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The house, as the assistant names it.")
    tone: str = "courteous, warm and precise"
    documents: str = Field(description="A folder of Markdown documents, or a BEIR corpus.jsonl; relative to the repo.")
    index_dir: str = Field(description="Where the index of those documents is kept; relative to the repo.")
    contacts: BrandContacts = Field(default_factory=BrandContacts)
    strings: CustomerStrings
    style: BrandStyle = Field(default_factory=BrandStyle)

    @property
    def handoff(self) -> str:
        """How to reach a person, as one sentence built from the contacts."""
        ways = []
        if self.contacts.live_chat_hours:
            ways.append(f"live chat {self.contacts.live_chat_hours}")
        if self.contacts.phone:
            ways.append(f"phone {self.contacts.phone}")
        if self.contacts.email:
            ways.append(f"email {self.contacts.email}")
        if self.contacts.help_url:
            ways.append(f"the help centre at {self.contacts.help_url}")
        if not ways:
            return ""
        listed = ", ".join(ways[:-1]) + (f", or {ways[-1]}" if len(ways) > 1 else ways[-1])
        return f"A person will be glad to help: {listed}."

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else BRANDS_DIR.parent / candidate

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PROFILE) -> BrandProfile:
        file = Path(path).expanduser()
        if not file.is_file() and not file.is_absolute() and (BRANDS_DIR.parent / file).is_file():
            file = BRANDS_DIR.parent / file  # a path relative to the repository, from anywhere
        if not file.is_file():
            known = ", ".join(sorted(p.name for p in BRANDS_DIR.glob("*.yaml")))
            raise SettingsError(f"Brand profile {file} does not exist; the bundled profiles are: {known}.")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SettingsError(f"Brand profile {file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"Brand profile {file} must hold a mapping (name, documents, strings, ...).")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"Brand profile {file} is not valid ({problems}).") from exc
