"""Bad input gets a clear 4xx, never a 500: text that is not valid Unicode, and request bodies the API cannot read
(not JSON, not UTF-8, wrong types) are described in one plain sentence."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

UNREADABLE_TEXT = "contains text that is not valid Unicode (a lone surrogate such as \\ud800); send UTF-8 text"
NOT_JSON = 'the body is not valid JSON (send a UTF-8 JSON object such as {"message": "..."})'
# FastAPI's own words when a JSON body cannot even be decoded (e.g. it is not UTF-8); see body_error_response.
FASTAPI_BODY_ERROR = "There was an error parsing the body"
UNREADABLE_MESSAGE = (
    "I could not read your message: it contains characters that are not valid text. Please type it again."
)


def unreadable_text(value: Any) -> bool:
    """True for text that cannot be written as UTF-8 (a lone surrogate such as "\\ud800"), at any depth."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(unreadable_text(k) or unreadable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(unreadable_text(item) for item in value)
    return False


def readable(value: Any) -> Any:
    """A pydantic validator: refuses unreadable text with a clear message."""
    if unreadable_text(value):
        raise ValueError(UNREADABLE_TEXT)
    return value


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    kind = error.get("type", "")
    if kind == "json_invalid":
        return NOT_JSON
    if kind == "missing" and not where:
        return 'the body is empty (send a UTF-8 JSON object such as {"message": "..."})'
    if kind in ("model_attributes_type", "dict_type") and not where:
        return 'the body must be a JSON object such as {"message": "..."}'
    if kind == "string_unicode":
        message = UNREADABLE_TEXT
    else:
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


async def validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable sentence (and the itemised errors) instead of a bare list."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    problems = "; ".join(dict.fromkeys(_problem(error) for error in errors)) or "it could not be read"
    return JSONResponse(
        status_code=422,
        content={
            "detail": f"The request could not be read: {problems}.",
            "errors": [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors],
        },
    )


async def body_error_response(request: Request, exc: Exception) -> Response:
    """FastAPI answers a body it cannot decode with a bare "There was an error parsing the body": say what to send."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
        return JSONResponse(status_code=400, content={"detail": f"The request could not be read: {NOT_JSON}."})
    return await http_exception_handler(request, exc)
