"""The project's main job: the Maison Corvane Client Care chat on the bundled defaults.

    python app.py            # builds (or updates) the knowledge-base index, loads the local LLM, serves on localhost

Settings: ASSISTANT_* (see assistant/settings.py) and APP_* (see webapp/settings.py) environment variables.
`ASSISTANT_RETRIEVAL__QDRANT__LOCATION=indexes/qdrant` (or `..._URL=http://host:6333`) keeps the documents in a Qdrant
collection instead of the local index; nothing else changes.
With `ASSISTANT_LLM__BACKEND=llama_server` (and `ASSISTANT_LLM__PARALLEL_SLOTS=4`) the app starts llama.cpp's own
server on a free loopback port, answers several customers at once through it, and stops it when the app stops.
"""

from __future__ import annotations

import logging
import signal
import sys

from rich.console import Console

from colbert_att_assistant.assistant import Assistant, AssistantSettings
from colbert_att_assistant.assistant.errors import AssistantError
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.webapp import create_app
from colbert_att_assistant.webapp.server import serve
from colbert_att_assistant.webapp.settings import AppSettings


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def start_assistant(
    settings: AssistantSettings,
    chat_model: ChatModel,
    encoder: ColBERTAttEncoder | None = None,
    show_progress: bool = False,
) -> Assistant:
    """The app's start-up: index the brand's documents where the settings say (only new or changed ones are
    encoded; the local index or a Qdrant collection), then the assistant on that index."""
    index, _ = index_brand_documents(settings, encoder, show_progress=show_progress)
    assistant = Assistant.from_settings(settings, chat_model=chat_model, index=index)
    # The documents' words are read and the query encoder built now, not while the first client waits.
    assistant.vocabulary()
    assistant.index.encoder.prepare_query_backend()
    return assistant


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    app_settings = AppSettings()
    try:
        settings = AssistantSettings.load()
        # The LLM first: a missing llama-server binary or model file is reported before minutes of indexing.
        chat_model = ChatModel.from_settings(settings.llm)
    except AssistantError as exc:
        console.print(f"Cannot start: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    # uvicorn re-raises the stop signal once it has shut down; SIGTERM's default action would end the process
    # there and then, so it becomes SystemExit and the `with` below still stops a llama-server the app started.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Whatever ends the app (a stop signal, Ctrl-C, an error), a llama-server it started is stopped with it.
    with chat_model:
        console.print("Indexing the knowledge base (only new or changed documents are encoded)…")
        try:
            assistant = start_assistant(settings, chat_model, show_progress=True)
        except ColBERTAttError as exc:
            console.print(f"Cannot start: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
            sys.exit(1)
        console.print(f"Loaded {len(assistant.index)} chunks and the LLM {chat_model.name}.")
        app = create_app(assistant, app_settings)
        console.print(
            f"Customer chat: http://{app_settings.host}:{app_settings.port}/chat/  ·  staff: /staff/  ·  API: /api/docs"
        )
        serve(app, app_settings)


if __name__ == "__main__":
    main()
