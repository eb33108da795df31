"""Settings: flag > environment > config file > default; unknown keys and bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import InvalidRequest
from modelport.settings import load_settings
from tests.conftest import RunningServer


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text("port = 7000\nmax_rows_per_request = 50\nlog_level = 'debug'\n")
    monkeypatch.delenv("MODELPORT_PORT", raising=False)
    monkeypatch.delenv("MODELPORT_CONFIG", raising=False)
    assert load_settings().port == 8000
    assert load_settings(config_file=config).port == 7000
    monkeypatch.setenv("MODELPORT_PORT", "7100")
    settings = load_settings(config_file=config)
    assert settings.port == 7100 and settings.max_rows_per_request == 50
    assert load_settings({"port": 7200}, config_file=config).port == 7200
    monkeypatch.setenv("MODELPORT_CONFIG", str(config))
    assert load_settings().log_level == "debug"


def test_unknown_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(InvalidRequest, match=r"unknown setting.*prot"):
        load_settings(config_file=config)
    with pytest.raises(InvalidRequest, match="port"):
        load_settings({"port": 70000})
    with pytest.raises(InvalidRequest, match="config file not found"):
        load_settings(config_file=tmp_path / "missing.toml")
    config.write_text("port = [")
    with pytest.raises(InvalidRequest, match="not valid TOML"):
        load_settings(config_file=config)


def test_defaults_live_in_the_home_folder(tmp_path: Path) -> None:
    settings = load_settings({"home": str(tmp_path)})
    assert settings.store_url == f"sqlite:///{tmp_path / 'modelport.db'}"
    assert settings.artifacts_location == str(tmp_path / "artifacts")


def test_settings_endpoint_is_admin_only_and_masks_passwords(server: RunningServer) -> None:
    shown = server.client().health()
    assert shown["status"] == "ok"
    http = server.http()
    settings = http.get("/v1/settings").json()
    assert settings["port"] == server.settings.port
    assert server.http(server.key("r", "read")).get("/v1/settings").status_code == 403
    masked = load_settings({"store": "postgresql://app:s3cret@db:5432/mp"}).public()
    assert "s3cret" not in masked["store"] and "***" in masked["store"]
