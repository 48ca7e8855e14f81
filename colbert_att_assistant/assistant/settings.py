"""Assistant settings: defaults < config file (YAML or JSON) < environment variables < explicit arguments.

Environment variables use the prefix `ASSISTANT_` and `__` between levels, e.g.
`ASSISTANT_LLM__BACKEND=openai_like ASSISTANT_LLM__BASE_URL=http://localhost:8080/v1 ASSISTANT_LLM__MODEL=qwen`.
A config file is named by `ASSISTANT_CONFIG_FILE` or passed to `AssistantSettings.from_file`.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from colbert_att_assistant.assistant.brand import DEFAULT_PROFILE, BrandProfile
from colbert_att_assistant.assistant.errors import SettingsError
from colbert_att_assistant.retriever.index.qdrant_settings import QdrantSettings
from colbert_att_assistant.retriever.scoring import ScoringMode

CONFIG_FILE_ENV = "ASSISTANT_CONFIG_FILE"


class LLMBackend(StrEnum):
    LLAMA_CPP = "llama_cpp"  # embedded, no network: a GGUF file through llama-cpp-python
    OPENAI_LIKE = "openai_like"  # any OpenAI-compatible server: vLLM, llama.cpp server, Ollama's /v1, OpenAI
    OLLAMA = "ollama"
    # llama.cpp's own server with parallel slots, started and stopped by the app on a loopback port
    LLAMA_SERVER = "llama_server"


class Audience(StrEnum):
    """Who is asking, which decides the documents a turn may see (the HTTP API names it `mode`)."""

    CUSTOMER = "customer"  # public documents only
    STAFF = "staff"  # public and internal documents


class AnswerStyle(StrEnum):
    GENERATED = "generated"  # the LLM writes the answer from the evidence; each sentence checked before it is shown
    QUOTED = "quoted"  # the best evidence lines themselves, cited; no LLM call (fast, grounded by construction)
    # Quoted lines chosen and gated by the LLM's yes/no judgement of each candidate line; nothing is generated.
    JUDGED = "judged"


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: LLMBackend = LLMBackend.LLAMA_CPP
    # llama_cpp / llama_server: a bundled model by name, or any GGUF file by path (the path wins).
    bundled_model: str = "qwen2.5-coder-0.5b-instruct"
    gguf_path: str | None = None
    threads: int | None = Field(default=None, ge=1, description="llama.cpp threads; None = all cores.")
    # Generations in flight at once. The embedded llama_cpp model always takes one at a time.
    parallel_slots: int = Field(
        default=4,
        ge=1,
        le=64,
        description="llama_server: the slots it is started with (decoded together in one batch); openai_like / "
        "ollama: requests sent at once, set to what the server serves in parallel. Ignored by llama_cpp.",
    )
    server_binary: str | None = Field(
        default=None,
        description="llama_server: path to llama-server; None = the build of `python -m "
        "colbert_att_assistant.assistant.llama_server_build`, then PATH.",
    )
    server_startup_timeout_s: float = Field(default=120.0, gt=0, description="llama_server: wait for /health.")
    # openai_like / ollama
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = Field(default=None, description="Falls back to the OPENAI_API_KEY variable.")
    request_timeout_s: float = Field(default=120.0, gt=0)
    # all backends
    context_window: int = Field(default=4096, ge=512)
    max_new_tokens: int = Field(default=200, ge=16)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index_dir: str | None = Field(default=None, description="None: the brand profile's index_dir.")
    qdrant: QdrantSettings | None = Field(
        default=None,
        description="None: the local index in index_dir. Set (a url, or a location for Qdrant's local mode, e.g. "
        "ASSISTANT_RETRIEVAL__QDRANT__LOCATION=indexes/qdrant): the documents live in that Qdrant collection.",
    )
    documents_dir: str | None = Field(
        default=None, description="A folder of Markdown documents or a BEIR corpus.jsonl; None: the brand profile's."
    )
    top_k: int = Field(default=3, ge=1, le=20, description="Passages whose evidence is given to the LLM.")
    evidence_units: int = Field(default=6, ge=1, le=20, description="Sentences, list items or table rows shown.")
    query_max_tokens: int = Field(
        default=64,
        ge=8,
        le=512,
        description="Word pieces of a client's message that retrieval reads. 64 cuts none of the labelled questions "
        "and 2 of 160 WixQA questions (32 cut 9 and 35), at equal or better nDCG@10 (benchmarks/RESULTS.md).",
    )
    scoring: ScoringMode = ScoringMode.COLBERT_ATT
    min_score_to_answer: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Below this normalised top score the assistant abstains; None = the calibrated value.",
    )
    min_evidence_to_answer: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Below this evidence score (question covered by the best unit) it abstains; None = calibrated.",
    )
    min_evidence_for_extract: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="A declined or unsupported draft is replaced by quoted evidence at or above this score; "
        "None = calibrated.",
    )
    # Quoted is the default: on the labelled calibration half it was right as often as the bundled 0.5B's drafts
    # (25 against 26 of 75), wrong half as often (15 against 28), invented for unanswerable questions half as often
    # (6 against 13 of 19), and answers in a quarter of a second instead of tens (benchmarks/RESULTS.md).
    answer_style: AnswerStyle = Field(
        default=AnswerStyle.QUOTED,
        description="quoted: the best evidence lines are the answer, cited, no LLM call; generated: the LLM answers "
        "from the evidence, each sentence checked before it is shown.",
    )
    min_evidence_to_quote: float = Field(
        default=0.45,
        ge=0.0,
        le=1.0,
        description="Quoted style: below this evidence score, adjusted by the ranking's spread "
        "(`score_spread_weight`), the assistant abstains. Chosen on the calibration half "
        "(benchmarks/quoted_answers.py): the most right quotes minus twice the quotes given to unanswerable questions.",
    )
    # Chosen with the threshold on the calibration half (benchmarks/quoted_answers.py, the best value averaged with
    # its grid neighbours): 53 / 75 right, 9 wrong, 6 / 19 invented, against 41, 7, 6 for the evidence score alone at
    # 0.50; before the staff weak matches, weights 0.3-0.6 with thresholds 0.425-0.475 were all within one answer of
    # the best (benchmarks/RESULTS.md, 2026-12-04).
    score_spread_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Quoted style: the evidence score is adjusted by this weight x ln(spread / 0.05) before the quote "
        "gate, the spread being the standard deviation over the mean of the top 10 retrieval scores "
        "(assistant/answerability.py): a ranking whose best passages stand out raises it, a flat one lowers it. "
        "0: the evidence score alone.",
    )

    # On the calibration half at 0.50: 2 lines right 25 / wrong 15, 3 lines 27 / 13, 4 lines 28 / 12 of 75; three,
    # since a fourth line bought one more right answer for a third more text to read (benchmarks/RESULTS.md).
    quoted_lines: int = Field(
        default=3,
        ge=1,
        le=8,
        description="Evidence lines (sentences, list items, table rows) a quoted answer shows: the best by the "
        "alignment score, printed in passage order.",
    )

    quote_context: int = Field(
        default=1,
        ge=0,
        le=3,
        description="Quoted and judged styles: units either side of each quoted line, from the same paragraph, list "
        "or table, quoted with it as one excerpt (0: the lines alone). Chosen on the calibration half "
        "(benchmarks/quoted_answers.py).",
    )

    correct_spelling: bool = Field(
        default=True,
        description="Search with the client's misspelt words corrected toward the documents' own words "
        "(assistant/vocabulary.py); the message is kept and shown as written.",
    )

    min_unknown_word_similarity: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description='Quoted and judged styles: a message word the documents never use ("velvet") whose word '
        "pieces find nothing at least this similar (mean best cosine) in the retrieved passages marks a question "
        "the documents do not cover, and the assistant hands off (assistant/unknown_words.py). Off (0) by default: "
        "0.42, the best on the calibration half, cost answerable questions on the held-out half and on WixQA "
        "(benchmarks/RESULTS.md, 2026-12-04).",
    )

    staff_weak_matches: bool = Field(
        default=True,
        description="Staff mode, quoted and judged styles: below the retrieval, evidence or quote gates, the best "
        "lines are still quoted, marked as a weak match (`weak_match`, with a note), since staff read the sources "
        "themselves and a handoff to a person tells them nothing. False: staff get the handoff as customers do.",
    )

    judged_candidates: int = Field(
        default=4,
        ge=1,
        le=30,
        description="Judged style: the best-aligned lines of the sources that the LLM judges, one prompt each.",
    )
    min_judge_log_odds: float = Field(
        default=-0.1,
        ge=-30.0,
        le=30.0,
        description="Judged style: below this log-odds of Yes against No for the best-judged line, the assistant "
        "abstains. Chosen for the bundled 1.5B on the calibration half (benchmarks/judged_answers.py); another "
        "judge model needs its own.",
    )


class ChatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_message_chars: int = Field(default=2000, ge=10)
    memory_token_limit: int = Field(default=600, ge=0, description="Earlier turns kept per session, in LLM tokens.")
    max_sessions: int = Field(default=1000, ge=1, description="Least recently used sessions are forgotten first.")


class AssistantSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="forbid")

    brand_profile: str = Field(
        default=str(DEFAULT_PROFILE), description="YAML brand profile: the house, its documents, client strings."
    )
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    def brand(self) -> BrandProfile:
        return BrandProfile.load(self.brand_profile)

    def index_dir(self, brand: BrandProfile) -> Path:
        return brand.resolve(self.retrieval.index_dir or brand.index_dir)

    def documents_path(self, brand: BrandProfile) -> Path:
        return brand.resolve(self.retrieval.documents_dir or brand.documents)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> AssistantSettings:
        previous = os.environ.get(CONFIG_FILE_ENV)
        os.environ[CONFIG_FILE_ENV] = str(path)
        try:
            return cls.load(**overrides)
        finally:
            if previous is None:
                os.environ.pop(CONFIG_FILE_ENV, None)
            else:
                os.environ[CONFIG_FILE_ENV] = previous

    @classmethod
    def load(cls, **overrides: Any) -> AssistantSettings:
        """Like the constructor, but a bad value becomes a `SettingsError` naming the field and its source."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SettingsError(
                f"Assistant settings are not valid ({problems}). Check the arguments, the ASSISTANT_* environment "
                f"variables and the file named by {CONFIG_FILE_ENV}."
            ) from exc


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the YAML or JSON file named by ASSISTANT_CONFIG_FILE, if any."""

    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        file = Path(path)
        if not file.is_file():
            raise SettingsError(f"{CONFIG_FILE_ENV}={path} does not name a file.")
        text = file.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise SettingsError(f"{file} is not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SettingsError(f"{file} must hold a mapping with the keys llm, retrieval, chat.")
        return data
