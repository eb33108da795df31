"""Settings: flag > environment > config file > default; unknown keys and bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import InvalidRequest
from modelport.settings import Settings, load_settings
from tests.conftest import POSTGRES_URL, RunningServer, start_server


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MODELPORT_* setting leaks in from the shell running the tests."""
    for name in [*Settings.model_fields, "config"]:
        monkeypatch.delenv(f"MODELPORT_{name.upper()}", raising=False)


def test_precedence_flag_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text("port = 7000\nmax_rows_per_request = 50\nlog_level = 'debug'\n")
    default = load_settings()
    assert (default.port, default.max_rows_per_request, default.log_level) == (8000, 10_000, "info")
    from_file = load_settings(config_file=config)
    assert (from_file.port, from_file.max_rows_per_request) == (7000, 50)
    monkeypatch.setenv("MODELPORT_PORT", "7100")
    assert load_settings().port == 7100  # env over default
    from_env = load_settings(config_file=config)
    assert from_env.port == 7100  # env over file
    assert from_env.max_rows_per_request == 50 and from_env.log_level == "debug"  # file fills
    flagged = load_settings({"port": 7200, "log_level": None}, config_file=config)
    assert flagged.port == 7200  # flag over env and file
    assert flagged.log_level == "debug"  # a flag left unset (None) does not count
    monkeypatch.setenv("MODELPORT_CONFIG", str(config))
    assert load_settings().max_rows_per_request == 50  # the file named by the environment
    monkeypatch.setenv("MODELPORT_NO_AUTH", "true")
    assert load_settings().no_auth is True


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\nport = 7000\ncolour = 'red'\n")
    with pytest.raises(InvalidRequest, match=r"unknown setting\(s\) in .*bad.toml: colour, prot"):
        load_settings(config_file=config)
    with pytest.raises(InvalidRequest, match="prot"):
        load_settings({"prot": 1})
    with pytest.raises(InvalidRequest, match="config file not found"):
        load_settings(config_file=tmp_path / "missing.toml")
    config.write_text("port = [")
    with pytest.raises(InvalidRequest, match="not valid TOML"):
        load_settings(config_file=config)


def test_invalid_values_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequest, match=r"invalid settings: port: .*less than or equal"):
        load_settings({"port": 70000})
    with pytest.raises(InvalidRequest, match="log_level"):
        load_settings({"log_level": "loud"})
    # A request's prediction ids are one block, which holds at most 2**24.
    assert load_settings({"max_rows_per_request": 2**24}).max_rows_per_request == 2**24
    with pytest.raises(InvalidRequest, match=r"max_rows_per_request: .*less than or equal"):
        load_settings({"max_rows_per_request": 2**24 + 1})
    config = tmp_path / "modelport.toml"
    config.write_text("max_rows_per_request = 'many'\n")
    with pytest.raises(InvalidRequest, match="max_rows_per_request"):
        load_settings(config_file=config)
    config.write_text("max_body_bytes = 10\n")
    with pytest.raises(InvalidRequest, match="max_body_bytes"):
        load_settings(config_file=config)
    monkeypatch.setenv("MODELPORT_PORT", "eighty")
    with pytest.raises(InvalidRequest, match="port"):
        load_settings()
    monkeypatch.setenv("MODELPORT_PORT", "8080")
    monkeypatch.setenv("MODELPORT_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(InvalidRequest, match="sqlite_synchronous"):
        load_settings()


def test_defaults_live_in_the_home_folder(tmp_path: Path) -> None:
    settings = load_settings({"home": str(tmp_path)})
    assert settings.store_url == f"sqlite:///{tmp_path / 'modelport.db'}"
    assert settings.artifacts_location == str(tmp_path / "artifacts")
    assert load_settings({"home": "relative"}).home == Path("relative").absolute()


def test_settings_endpoint_is_admin_only_and_masks_passwords(
    server: RunningServer, settings: Settings
) -> None:
    http = server.http()
    shown = http.get("/v1/settings").json()
    assert shown == server.settings.public()
    assert set(shown) == set(Settings.model_fields)
    assert shown["port"] == server.settings.port and shown["store"] == settings.store_url
    for scope in ("read", "push", "predict", "feedback"):
        denied = server.http(server.key("r", scope)).get("/v1/settings")
        assert denied.status_code == 403, scope
    assert server.http("").get("/v1/settings").status_code == 401

    masked = load_settings({"store": "postgresql://app:s3cret@db:5432/mp"}).public()
    assert masked["store"] == "postgresql://app:***@db:5432/mp"
    if POSTGRES_URL:
        # A store URL with a password, served for real: the endpoint shows it masked.
        url = settings.store_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
        assert "s3cret" in url
        with_password = start_server(settings.model_copy(update={"store": url}))
        try:
            text = with_password.http().get("/v1/settings").text
            assert "s3cret" not in text and "postgres:***@" in text
        finally:
            with_password.stop()


def test_a_setting_on_by_default_has_a_flag_to_turn_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A boolean setting whose default is true takes ``--no-NAME`` (and ``--NAME``, over the
    environment); an unset pair leaves the environment's word standing."""
    import click
    from click.testing import CliRunner

    from modelport.cli.common import load, settings_options

    seen: list[Settings] = []

    @click.command()
    @settings_options
    def show(config_file: str | None, **flags: object) -> None:
        seen.append(load(config_file, flags))

    runner = CliRunner()
    for args, expected in (([], True), (["--no-inline-when-alone"], False)):
        assert runner.invoke(show, args, catch_exceptions=False).exit_code == 0
        assert seen[-1].inline_when_alone is expected
    monkeypatch.setenv("MODELPORT_MODEL_CACHE", "false")
    assert runner.invoke(show, [], catch_exceptions=False).exit_code == 0
    assert seen[-1].model_cache is False  # the environment, no flag given
    assert runner.invoke(show, ["--model-cache"], catch_exceptions=False).exit_code == 0
    assert seen[-1].model_cache is True  # the flag over the environment
    assert "--no-model-cache" in runner.invoke(show, ["--help"]).output
    assert "--no-no-auth" not in runner.invoke(show, ["--help"]).output  # off by default
