"""The settings list: defaults, parsing, one clear line per bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config.settings import SETTINGS, SettingsError, load_settings, settings_markdown


def test_defaults_are_the_embedded_setup(tmp_path):
    s = load_settings({"ANNOSYNC_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'annosync.db'}"
    assert s.storage_url == (tmp_path / "bucket").as_uri()
    assert s.webhook_header == "Authorization"
    assert s.max_body_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"ANNOSYNC_MAX_BODY_BYTES": "lots"}, "ANNOSYNC_MAX_BODY_BYTES"),
        ({"ANNOSYNC_MAX_BODY_BYTES": "-5"}, "ANNOSYNC_MAX_BODY_BYTES"),
        ({"ANNOSYNC_STORAGE_URL": "ftp://x"}, "ANNOSYNC_STORAGE_URL"),
        ({"ANNOSYNC_DATABASE_URL": "mysql://x"}, "ANNOSYNC_DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"ANNOSYNC_WEBHOOK_HEADER": "Bad Header"}, "ANNOSYNC_WEBHOOK_HEADER"),
        ({"ANNOSYNC_PROJECT_DELETE": "maybe"}, "ANNOSYNC_PROJECT_DELETE"),
        ({"DEBUG": "perhaps"}, "DEBUG"),
    ],
)
def test_a_bad_value_names_its_setting(env, name):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert str(err.value).startswith(name + "=")
    assert "\n" not in str(err.value)


def test_a_bad_secret_is_not_echoed():
    with pytest.raises(SettingsError) as err:
        load_settings({"ANNOSYNC_WEBHOOK_SECRET": "short"})
    assert "short" not in str(err.value)
    assert "ANNOSYNC_WEBHOOK_SECRET=(hidden)" in str(err.value)


def test_several_secrets_for_rotation():
    s = load_settings({"ANNOSYNC_WEBHOOK_SECRET": "first-secret, second-secret"})
    assert s.webhook_secrets == ("first-secret", "second-secret")
    assert "first-secret" not in repr(s)


def test_settings_table_lists_every_setting():
    table = settings_markdown()
    assert all(f"`{s.env}`" in table for s in SETTINGS)


def test_cli_stops_on_a_bad_setting_with_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sync.cli", "db", "upgrade"],
        env={
            "ANNOSYNC_DATA_DIR": str(tmp_path),
            "ANNOSYNC_MAX_BODY_BYTES": "big",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "annosync: ANNOSYNC_MAX_BODY_BYTES='big': must be a number"
    ]


def test_docs_list_every_setting_as_the_settings_command_does():
    from pathlib import Path

    from config.settings import settings_markdown

    docs = (Path(__file__).parents[1] / "docs" / "settings.md").read_text()
    assert settings_markdown() in docs  # regenerate: annosync settings
    assert [s.env for s in SETTINGS if f"`{s.env}`" not in docs] == []
