"""App settings: environment variables with the prefix `APP_` (e.g. APP_STAFF_PASSWORD, APP_PORT)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
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
