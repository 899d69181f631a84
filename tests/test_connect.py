"""`annosync connect`: a webhook to annosync in every Label Studio project, added once,
against a fake Label Studio that checks each request as Label Studio 1.23 does."""

from __future__ import annotations

import os

import pytest
from lsfake import FakeLabelStudio

from sync import cli, launcher

TOKEN = "ls-legacy-token"
SECRET = "connect-test-secret"


@pytest.fixture
def fake_ls(monkeypatch):
    fake = FakeLabelStudio(TOKEN, {1: {"title": "a"}, 2: {"title": "b"}, 3: {"title": "c"}}, {})
    fake.webhooks.append(
        {"id": 99, "project": 2, "url": "http://annosync:8080/webhooks/label-studio/2"}
    )
    for key in [k for k in os.environ if k.startswith("ANNOSYNC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LABEL_STUDIO_URL", fake.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    monkeypatch.setenv("ANNOSYNC_WEBHOOK_SECRET", SECRET)
    yield fake
    fake.close()


def test_connect_adds_one_webhook_per_project_once(fake_ls, capsys):
    assert cli.main(["connect", "--receiver-url", "http://annosync:8080/"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "project 1: webhook added -> http://annosync:8080/webhooks/label-studio/1",
        "project 3: webhook added -> http://annosync:8080/webhooks/label-studio/3",
        "3 projects: 2 webhooks added, 1 already there",
    ]
    added = [h for h in fake_ls.webhooks if h["id"] != 99]
    assert added == [
        {
            "id": 2 + n,
            "project": project,
            "url": f"http://annosync:8080/webhooks/label-studio/{project}",
            "send_payload": True,
            "send_for_all_actions": True,
            "headers": {"Authorization": f"Bearer {SECRET}"},
            "is_active": True,
        }
        for n, project in enumerate((1, 3))
    ]
    assert "/api/projects/?page=2&page_size=100" in fake_ls.requests  # followed the pages

    assert cli.main(["connect", "--receiver-url", "http://annosync:8080"]) == 0
    assert capsys.readouterr().out.splitlines() == ["3 projects: 0 webhooks added, 3 already there"]
    assert len(fake_ls.webhooks) == 3


def test_connect_says_what_is_missing_in_one_line(fake_ls, monkeypatch, capsys):
    assert cli.main(["connect", "--receiver-url", "annosync:8080"]) == 2
    assert capsys.readouterr().err == (
        "annosync: --receiver-url must be an http(s) URL, not 'annosync:8080'\n"
    )
    for bad in ("-5", "nan", "soon"):
        with pytest.raises(SystemExit) as refused:
            cli.main(["connect", "--receiver-url", "http://a:1", "--watch", bad])
        assert refused.value.code == 2
        assert "--watch: must be a number of seconds >= 0" in capsys.readouterr().err
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    assert cli.main(["connect", "--receiver-url", "http://a:1"]) == 2
    assert "connect needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{launcher.free_port()}")
    assert cli.main(["connect", "--receiver-url", "http://a:1"]) == 1  # nobody answers
    assert capsys.readouterr().err.startswith("annosync: GET /api/projects/: ConnectionError")
