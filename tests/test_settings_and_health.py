import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from aggregator.logging import RedactSecretsFilter, redact

ROOT = Path(__file__).resolve().parent.parent


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "CREDENTIALS_KEYS"}}
    return subprocess.run(
        [sys.executable, "-c", "import aggregator.settings"],
        cwd=ROOT,
        env={**clean, "VAR_DIR": str(ROOT / "var" / "nonexistent-env"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = _import_settings({"DEBUG": "0", "CREDENTIALS_KEYS": "x"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_refuses_to_start_without_credential_keys() -> None:
    result = _import_settings({"DEBUG": "0", "SECRET_KEY": "s" * 60})
    assert result.returncode != 0
    assert "CREDENTIALS_KEYS is not set" in result.stderr


def test_development_starts_with_its_own_defaults() -> None:
    assert _import_settings({"DEBUG": "1"}).returncode == 0


def test_healthz_reports_database_and_broker(db: Any) -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    assert body["worker"] == {"last_heartbeat": None, "recent": False}


def test_healthz_answers_503_when_the_broker_is_down(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator.celery import app

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url, app.conf.broker_transport_options = "redis://127.0.0.1:1/0", {}
    try:
        response = Client().get("/healthz")
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = saved
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False
    assert response.json()["database"]["ok"] is True


def test_secrets_are_redacted_from_log_lines() -> None:
    line = "calling vendor with Authorization: Bearer sk-admin-abcdef1234567890 and agk_0a1b2c_deadbeefcafe"
    cleaned = redact(line)
    assert "sk-admin-abcdef1234567890" not in cleaned
    assert "deadbeefcafe" not in cleaned
    assert "Bearer [redacted]" in cleaned
    assert redact("x-api-key: sk-ant-admin01-zzzzzzzzzzzz") == "x-api-key: [redacted]"


def test_log_records_are_one_json_line_with_secrets_masked(caplog: pytest.LogCaptureFixture) -> None:
    from pythonjsonlogger.json import JsonFormatter

    record = logging.LogRecord(
        "vendor", logging.WARNING, __file__, 1, "key %s failed", ("sk-proj-1234567890abcdef",), None
    )
    assert RedactSecretsFilter().filter(record)
    output = JsonFormatter("%(levelname)s %(name)s %(message)s").format(record)
    assert "\n" not in output
    assert json.loads(output) == {"levelname": "WARNING", "name": "vendor", "message": "key [redacted] failed"}
