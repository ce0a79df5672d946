"""Settings: ``ZGODA_*`` environment variables, then an optional TOML file, then defaults.

The secret key is never a built-in default: when none is configured, one is generated
on first use and stored in the data folder (mode 0600), so restarts keep sessions and
signed links valid. Several machines sharing one database must set ``ZGODA_SECRET_KEY``.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _config_file() -> Path | None:
    path = os.environ.get("ZGODA_CONFIG")
    return Path(path) if path else None


class Settings(BaseSettings):
    """Every knob of a Zgoda installation; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="ZGODA_", extra="ignore")

    data_dir: Path = Field(default=Path("zgoda-data"), description="Folder for the SQLite file, secret key, files.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default a SQLite file in data_dir.")
    secret_key: SecretStr | None = Field(default=None, description="HMAC key for sessions and signed links.")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public URL used in every link we send.")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_verify_certificate: bool = Field(default=True, description="Check the SMTP server's TLS certificate.")
    smtp_ca_file: str | None = Field(default=None, description="CA bundle for the SMTP server's certificate.")
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for the SMTP server.")
    smtp_connections: int = Field(default=4, ge=1, le=64, description="Parallel SMTP connections per worker task.")
    smtp_provider: Literal["smtp", "ses", "sendgrid", "mailgun", "postmark"] = Field(
        default="smtp", description="The relay behind ZGODA_SMTP_HOST, for its per-message tracking headers."
    )
    bounce_domain: str | None = Field(
        default=None, description="Domain of the per-send bounce address (bounces+REF@...); default the From domain."
    )
    unsubscribe_mailto: bool = Field(
        default=False, description="Also offer mailto:unsubscribe+REF@<bounce domain> in List-Unsubscribe."
    )
    send_batch_size: int = Field(default=200, ge=1, le=10_000, description="Sends a worker claims at a time.")
    send_lease_seconds: float = Field(
        default=60.0, gt=0, description="How long claimed sends stay a worker's before another may take them."
    )
    send_parallel_tasks: int = Field(default=2, ge=1, le=64, description="Worker tasks one campaign is split into.")
    imap_host: str | None = Field(default=None, description="The bounce mailbox, read by `zgoda feedback poll`.")
    imap_port: int = 993
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_security: Literal["tls", "starttls", "none"] = "tls"
    imap_folder: str = "INBOX"
    bounce_maildir: Path | None = Field(
        default=None, description="A local Maildir the bounce domain's MX delivers into, polled like the mailbox."
    )
    ses_topic_arns: list[str] = Field(default_factory=list, description="SNS topics whose SES events are accepted.")
    sendgrid_public_key: str | None = Field(default=None, description="SendGrid's signed-webhook verification key.")
    mailgun_signing_key: SecretStr | None = Field(default=None, description="Mailgun's HTTP webhook signing key.")
    postmark_webhook_token: SecretStr | None = Field(
        default=None, description="Secret path token of the Postmark webhook URL (/hooks/postmark/<token>)."
    )
    sink_maildir: Path | None = Field(default=None, description="The Maildir the local SMTP sink writes (UI).")

    broker_url: str | None = Field(default=None, description="Celery broker; unset runs tasks in-process.")
    task_queue: str = Field(default="zgoda", description="The broker queue Zgoda's tasks go through.")
    default_phone_region: str = "PL"

    session_hours: int = Field(default=12, ge=1, description="How long a sign-in lasts.")
    login_max_failures: int = Field(default=5, ge=1, description="Failed sign-ins per address before a pause.")
    login_window_minutes: int = Field(default=15, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'zgoda.db').resolve()}"

    def resolved_secret_key(self) -> bytes:
        """The configured key, or the one stored in the data folder (created on first use)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()

    @property
    def cookies_secure(self) -> bool:
        return self.base_url.startswith("https://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
