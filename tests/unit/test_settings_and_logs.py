from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from opsassist.logs import configure_logging, correlation_scope, get_logger
from opsassist.settings import Settings, settings_table_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_an_env_var_with_a_description(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSASSIST_CHUNK_MAX_CHARS", "900")
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "opensearch")
    settings = Settings()
    assert settings.chunk_max_chars == 900 and settings.index_backend == "opensearch"
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_invalid_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "elasticsearch")
    with pytest.raises(ValueError, match="index_backend"):
        Settings()


def test_secrets_never_show_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSASSIST_OPENSEARCH_PASSWORD", "hunter2-secret")
    settings = Settings()
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in settings.model_dump_json()


def test_readme_settings_table_is_current() -> None:
    assert settings_table_markdown() in (ROOT / "README.md").read_text(), (
        "README settings table is stale: run `opsassist settings --markdown`"
    )


def test_json_logs_carry_correlation_id_and_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = get_logger("test")
    with correlation_scope("run-42"):
        log.info("hello", extra={"chunks": 3})
    log.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello" and first["correlation_id"] == "run-42"
    assert first["chunks"] == 3 and first["level"] == "INFO"
    assert second["correlation_id"] == "-"
    logging.getLogger("opsassist").handlers.clear()
