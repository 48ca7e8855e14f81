"""The project's main job: the Maison Corvane Client Care chat on the bundled defaults.

    python app.py            # builds (or updates) the knowledge-base index, loads the local LLM, serves on localhost

Settings: ASSISTANT_* (see assistant/settings.py) and APP_* (see webapp/settings.py) environment variables.
"""

from __future__ import annotations

import logging

from rich.console import Console

from assistant import Assistant, AssistantSettings
from webapp import create_app
from webapp.server import serve
from webapp.settings import AppSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    app_settings = AppSettings()
    console.print("Indexing the knowledge base (only new or changed documents are encoded)…")
    assistant = Assistant.from_settings(AssistantSettings.load(), show_progress=True)
    console.print(f"Loaded {len(assistant.index)} chunks and the LLM {assistant.chat_model.name}.")
    app = create_app(assistant, app_settings)
    console.print(
        f"Customer chat: http://{app_settings.host}:{app_settings.port}/chat/  ·  staff: /staff/  ·  API: /api/docs"
    )
    serve(app, app_settings)


if __name__ == "__main__":
    main()
