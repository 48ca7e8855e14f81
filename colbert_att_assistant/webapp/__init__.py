"""The chat app: a customer widget, a staff lookup page behind a login, and a small JSON API, all in
one FastAPI application (`create_app`), started by `python app.py`."""

from colbert_att_assistant.webapp.server import create_app

__all__ = ["create_app"]
