"""Settings: TOML, then ABIQUO_* environment variables, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from abiquo_central.settings import CentralSettings
from abiquo_dc.settings import DCSettings
from abiquo_runtime.settings import SettingsError, load_settings
from aim.settings import AimSettings

CONFIG = Path(__file__).parents[2] / "config"


@pytest.mark.parametrize(
    ("cls", "name"),
    [(CentralSettings, "central"), (DCSettings, "dc"), (AimSettings, "aim")],
)
def test_every_example_config_loads(cls: type, name: str) -> None:
    load_settings(cls, CONFIG / f"{name}.toml", env={})


def test_all_in_one_example_loads() -> None:
    from abiquo_cli.allinone import AllInOneSettings

    settings = load_settings(AllInOneSettings, CONFIG / "all-in-one.toml", env={})
    assert settings.http.host == "127.0.0.1"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[http]\nport = 9000\n[database]\nurl = "sqlite+aiosqlite:///x.db"\n')
    settings = load_settings(
        CentralSettings,
        path,
        env={
            "ABIQUO_HTTP__PORT": "9100",
            "ABIQUO_DATACENTERS__LIVENESS_TIMEOUT": "2.5",
            "ABIQUO_LOG__FORMAT": "json",
            "ABIQUO_UNRELATED": "ignored",
            "OTHER_HTTP__PORT": "1",
        },
    )
    assert settings.http.port == 9100
    assert settings.datacenters.liveness_timeout == 2.5
    assert settings.log.format == "json"
    assert settings.database.url == "sqlite+aiosqlite:///x.db"


def test_defaults_without_a_file() -> None:
    settings = load_settings(DCSettings, None, env={})
    assert settings.http.port == 8009
    assert settings.datacenter.heartbeat_interval == 5.0


@pytest.mark.parametrize(
    ("text", "env", "complaint"),
    [
        ("[http]\nport = 'eighty'\n", {}, "$.http.port"),
        ("[http\n", {}, "not valid TOML"),
        ("[http]\nprot = 80\n", {}, "prot"),
        ("", {"ABIQUO_LOG__LEVEL": "loud"}, "$.log.level"),
        ("", {"ABIQUO_HTTP__PORT": "x"}, "$.http.port"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, text: str, env: dict[str, str], complaint: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=complaint.replace("$", r"\$")):
        load_settings(CentralSettings, path, env=env)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(CentralSettings, tmp_path / "nope.toml", env={})
