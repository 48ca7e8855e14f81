"""App settings: environment variables with the prefix `APP_` (e.g. APP_STAFF_PASSWORD, APP_PORT)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=7860, ge=1, le=65535)
    production: bool = Field(default=False, description="Refuses to start without a staff password.")
    staff_username: str = "staff"
    staff_password: SecretStr | None = Field(
        default=None, description="None outside production: a random one is generated and printed at start."
    )
    log_path: Path = Path("logs/conversations.sqlite3")
    rate_limit_messages: int = Field(default=8, ge=1, description="Messages one client may send per window.")
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    # Sessions: ids are issued by the server and bound to customer or staff (and the staff login).
    sessions_path: Path = Field(
        default=Path("logs/sessions.sqlite3"), description="SQLite file of sessions and their memory."
    )
    session_idle_s: float = Field(default=86_400.0, gt=0, description="A session unused this long is forgotten.")
    # Clients and abuse.
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description='Peers (CIDR) whose X-Forwarded-For is believed, e.g. ["10.0.0.0/8"]; none by default.',
    )
    max_request_bytes: int = Field(default=256 * 1024, ge=1024, description="Larger request bodies get HTTP 413.")
    login_max_failures: int = Field(default=5, ge=1, description="Wrong staff passwords before a lockout.")
    login_window_s: float = Field(default=300.0, gt=0, description="Failures older than this are forgotten.")
    login_lockout_s: float = Field(default=300.0, gt=0, description="How long a client is locked out.")
    # Generation: a bounded line in front of the model.
    generation_slots: int | None = Field(
        default=None,
        ge=1,
        description="Answers generated at once; None = what the LLM backend admits (1 for the embedded model, "
        "its parallel slots for a server). A larger number is cut to that.",
    )
    queue_size: int = Field(default=8, ge=0, description="Requests that may wait for a slot; more get HTTP 503.")
    request_deadline_s: float = Field(default=120.0, gt=0, description="Waiting plus generating, per request.")
    shutdown_timeout_s: float = Field(default=5.0, gt=0, description="How long a stop waits for open connections.")

    @model_validator(mode="after")
    def _password_in_production(self) -> AppSettings:
        if self.production and self.staff_password is None:
            raise ValueError("APP_PRODUCTION is set but APP_STAFF_PASSWORD is not: set a staff password.")
        return self

    def staff_credentials(self) -> tuple[str, str]:
        if self.staff_password is None:
            # No default password exists: outside production a fresh one is made for this run and printed.
            self.staff_password = SecretStr(secrets.token_urlsafe(12))
            print(f"Staff page login for this run: {self.staff_username} / {self.staff_password.get_secret_value()}")
        return self.staff_username, self.staff_password.get_secret_value()
