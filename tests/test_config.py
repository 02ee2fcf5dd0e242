from pathlib import Path

import pytest

from callrelay.config import ConfigError, load_settings

SID = "AC" + "a" * 32


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_NUMBER",
        "TWILIO_APP_SID",
        "TWILIO_API_KEY",
        "TWILIO_API_SECRET",
        "PUBLIC_URL",
        "PORT",
        "HOST",
    ):
        monkeypatch.delenv(name, raising=False)


def test_server_settings_need_no_twilio_values() -> None:
    settings = load_settings()
    assert settings.port == 6000 and settings.host == "0.0.0.0"
    assert settings.captures_dir == Path("captures") and settings.log_file == Path("media.log")
    assert "TWILIO_ACCOUNT_SID" in settings.calling_missing()[0]


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"TWILIO_ACCOUNT_SID={SID}\nTWILIO_NUMBER=+14155550100\n")
    monkeypatch.setenv("PORT", "6010")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("PUBLIC_URL", "https://abc.ngrok.app/")
    settings = load_settings()
    assert settings.port == 6010 and settings.twilio_account_sid == SID
    assert settings.public_url == "https://abc.ngrok.app"
    assert settings.calling_missing() == []
    assert settings.secrets() == ["tok"]


def test_a_redis_password_is_a_secret_too() -> None:
    settings = load_settings(redis_url="redis://:s3cret-pass@10.0.0.5:6379/0", workers="2")
    assert "s3cret-pass" in settings.secrets()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("PORT", "six"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_NUMBER", "415-555-0100"),
        ("PUBLIC_URL", "abc.ngrok.app"),
        ("TWILIO_API_KEY", "key"),
        ("WHISPER_MODEL", "/nonexistent"),
        ("CONSOLE_PORT", "6000"),
    ],
)
def test_a_wrong_value_fails_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_blank_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "")
    assert load_settings().twilio_account_sid is None


def test_api_key_and_secret_stand_in_for_the_auth_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_API_KEY", "SK" + "b" * 32),
        ("TWILIO_API_SECRET", "secret"),
        ("TWILIO_NUMBER", "+14155550100"),
        ("PUBLIC_URL", "https://x.example"),
    ):
        monkeypatch.setenv(name, value)
    assert load_settings().calling_missing() == []


def test_the_console_gets_a_port_browsers_open_beside_one_they_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PORT", "CONSOLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().port == 6000 and load_settings().browser_port == 6080
    assert load_settings(port=6001).browser_port is None  # 6001 opens in a browser itself
    assert load_settings(console_port="0").browser_port is None
    assert load_settings(console_port="8443").browser_port == 8443
