"""The staff login for plain HTTP pages and endpoints (HTTP basic auth), with the same lockout after repeated
wrong passwords as the API's staff mode."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request
from fastapi.security import HTTPBasicCredentials

from colbert_att_assistant.webapp.login_throttle import locked_out_message
from colbert_att_assistant.webapp.services import AppServices


def is_staff(services: AppServices, username: str, password: str) -> bool:
    expected_user, expected_password = services.staff_credentials
    return bool(
        secrets.compare_digest(username.encode(), expected_user.encode())
        & secrets.compare_digest(password.encode(), expected_password.encode())
    )


def require_staff(
    services: AppServices, request: Request, username: str | None, password: str | None, realm: str
) -> str:
    """The staff user name, or HTTP 401 (asking for the login) / 429 (locked out)."""
    client = services.client(request)
    locked = services.throttle.locked_for(client)
    if locked is not None:
        raise HTTPException(429, locked_out_message(locked), headers={"Retry-After": str(max(1, round(locked)))})
    if username is None or password is None or not is_staff(services, username, password):
        if username is not None:
            services.throttle.failed(client)
        challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}
        raise HTTPException(401, "This page needs the staff login.", headers=challenge)
    services.throttle.succeeded(client)
    return username


def basic_staff(services: AppServices, request: Request, credentials: HTTPBasicCredentials | None, realm: str) -> str:
    return require_staff(
        services,
        request,
        credentials.username if credentials else None,
        credentials.password if credentials else None,
        realm,
    )
