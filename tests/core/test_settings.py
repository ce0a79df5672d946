"""Settings: environment, config file, a generated (never built-in) secret key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from zgoda.core.settings import Settings


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZGODA_SECRET_KEY", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    first = settings.resolved_secret_key()
    assert len(first) >= 48
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path / "data").resolved_secret_key() == first
    assert Settings(data_dir=tmp_path / "other").resolved_secret_key() != first


def test_environment_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZGODA_BASE_URL", "https://marketing.example.pl")
    monkeypatch.setenv("ZGODA_SMTP_PORT", "587")
    monkeypatch.setenv("ZGODA_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.base_url == "https://marketing.example.pl"
    assert settings.cookies_secure
    assert settings.smtp_port == 587
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'zgoda.db'}"


def test_config_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "zgoda.toml"
    config.write_text('base_url = "https://from-file.example"\nsmtp_host = "mail.example"\n')
    monkeypatch.setenv("ZGODA_CONFIG", str(config))
    monkeypatch.setenv("ZGODA_SMTP_HOST", "mail-from-env.example")
    settings = Settings()
    assert settings.base_url == "https://from-file.example"
    assert settings.smtp_host == "mail-from-env.example"


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZGODA_SMTP_PORT", "not-a-port")
    with pytest.raises(ValueError, match="smtp_port"):
        Settings()
