"""The status page (``/status``): sign-in, CSRF, what it shows; and the same page driven in a
real browser (Debian's Chromium through Playwright), which saves screenshots as artifacts."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import Receiver, delivery, make_settings, run_worker

from sync import inbox, launcher
from sync.models import Delivery
from sync.runtime import Runtime, set_runtime

TOKEN = "status-page-token-0123456789"
CHROMIUM = os.environ.get("ANNOSYNC_TEST_CHROMIUM") or shutil.which("chromium") or ""
ARTIFACTS = Path(os.environ.get("ANNOSYNC_TEST_ARTIFACTS", "build/test-artifacts"))


@pytest.fixture
def page_rt(tmp_path, database_url, redis_url):
    rt = Runtime(
        make_settings(
            tmp_path, database_url, redis_url, api_token=TOKEN, export_formats=("YOLO", "COCO")
        )
    )
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture
def served(page_rt):
    receiver = Receiver(page_rt)
    yield receiver
    receiver.close()


def _sign_in(receiver: Receiver) -> str:
    """Sign in with requests' session; the CSRF token of the session."""
    answer = receiver.http.post(receiver.base + "/status/login", data={"token": TOKEN}, timeout=10)
    assert answer.status_code == 200 and answer.url.endswith("/status")
    return re.search(r'name="csrf_token" value="([^"]+)"', answer.text).group(1)


def _failed_delivery(rt: Runtime, name: str = "03-ANNOTATION_CREATED") -> int:
    """A valid delivery recorded as failed (as after a storage outage outlasting its retries)."""
    recorded = inbox.record(
        rt.engine,
        action=delivery(name)["action"],
        project_id=1,
        body=json.dumps(delivery(name)).encode(),
        key=f"failed-{name}",
        status="failed",
    )
    with rt.sessions() as session:
        session.get(Delivery, recorded.delivery_id).last_error = "StorageError: bucket unreachable"
        session.commit()
    return recorded.delivery_id


def test_the_page_is_off_without_an_api_token(tmp_path, sqlite_url, redis_url):
    receiver = Receiver(Runtime(make_settings(tmp_path, sqlite_url, redis_url)))
    try:
        answer = receiver.get("/status")
    finally:
        receiver.close()
    assert answer.status_code == 404
    assert "ANNOSYNC_API_TOKEN" in answer.text


def test_sign_in_session_cookie_and_redirects(served):
    first = served.get("/status/projects/1", allow_redirects=False)
    assert first.status_code == 302
    assert first.headers["Location"].endswith("/status/login?next=/status/projects/1")

    wrong = served.http.post(served.base + "/status/login", data={"token": "nope"}, timeout=10)
    assert wrong.status_code == 401 and "not the API token" in wrong.text
    assert "annosync_status" not in served.http.cookies

    answer = served.http.post(
        served.base + "/status/login?next=//evil.example/x",  # never an open redirect
        data={"token": TOKEN},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/status"
    cookie = answer.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/status"):
        assert flag in cookie
    page = served.get("/status")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in policy and "default-src 'none'" in policy
    assert page.headers["Cache-Control"] == "no-store"
    assert TOKEN not in page.text


def test_posts_need_the_sessions_csrf_token(served, page_rt):
    failed = _failed_delivery(page_rt)
    csrf = _sign_in(served)
    url = f"{served.base}/status/deliveries/{failed}/replay"
    forged = served.http.post(url, data={"csrf_token": "guess"}, timeout=10)
    assert forged.status_code == 400
    missing = served.http.post(url, data={}, timeout=10)
    assert missing.status_code == 400
    with page_rt.sessions() as session:
        assert session.get(Delivery, failed).status == "failed"

    replayed = served.http.post(url, data={"csrf_token": csrf, "back": "/status/projects/1"})
    assert replayed.status_code == 200 and replayed.url.endswith("/status/projects/1")
    assert f"Delivery {failed} is pending again" in replayed.text
    with page_rt.sessions() as session:
        assert session.get(Delivery, failed).status == "pending"
    signed_out = served.http.post(served.base + "/status/logout", data={"csrf_token": csrf})
    assert signed_out.url.endswith("/status/login")
    assert served.get("/status", allow_redirects=False).status_code == 302


def test_what_the_pages_show(served, page_rt):
    for name in ("01-TASKS_CREATED", "03-ANNOTATION_CREATED"):
        assert served.post(delivery(name)).status_code == 202
    run_worker(page_rt)
    failed = _failed_delivery(page_rt, "05-ANNOTATION_UPDATED")
    _sign_in(served)

    overview = served.get("/status").text
    row = re.search(r'<tr id="project-1".*?</tr>', overview, re.S).group(0)
    cells = re.findall(r'<td class="num[^"]*"[^>]*>([^<]*)</td>', row)
    assert cells[:3] == ["3", "1", "1"]  # tasks, annotations, generation
    assert 'data-metric="failed">1<' in row and 'class="problem"' in row

    detail = served.get("/status/projects/1").text
    assert f"Replay delivery {failed}" in detail
    assert "StorageError: bucket unreachable" in detail
    assert "Download YOLO" in detail and "Download COCO" in detail
    assert '"api_key"' not in detail and "token" not in detail.lower().replace("csrf_token", "")

    download = served.get("/status/projects/1/export/yolo")
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/zip"
    assert download.content[:2] == b"PK"

    unknown = served.get("/status/projects/42")
    assert unknown.status_code == 404 and "no project 42" in unknown.text.lower()


# -- in a real browser ---------------------------------------------------------------------


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (scripts/bootstrap --test installs Debian's)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_in_a_browser_lag_moves_and_a_failed_delivery_is_replayed(browser, served, page_rt):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(served.base + "/status")
    expect(page).to_have_url(re.compile(r"/status/login"))
    page.get_by_label("API token").fill(TOKEN)  # the field is labelled
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Projects")

    # Deliveries arrive: the open page shows them pending (it refreshes itself), then applied.
    for name in ("01-TASKS_CREATED", "03-ANNOTATION_CREATED"):
        assert served.post(delivery(name)).status_code == 202
    row = page.locator("#project-1")
    expect(row.locator('[data-metric="pending"]')).to_have_text("2", timeout=15_000)
    expect(row.locator('[data-metric="oldest-pending"]')).not_to_have_text("0")
    run_worker(page_rt)
    expect(row.locator('[data-metric="pending"]')).to_have_text("0", timeout=15_000)
    expect(row.locator('[data-metric="oldest-pending"]')).to_have_text("0")
    expect(row.locator("td").nth(2)).to_have_text("1")  # generation 1: exported
    page.screenshot(path=str(ARTIFACTS / "status-overview.png"), full_page=True)

    # A failed delivery: listed with its reason; the replay button applies it.
    failed = _failed_delivery(page_rt, "05-ANNOTATION_UPDATED")
    page.goto(served.base + "/status/projects/1")
    failures = page.locator("#failed")
    expect(failures.get_by_text("StorageError: bucket unreachable")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "status-project-failed.png"), full_page=True)
    page.get_by_role("button", name=f"Replay delivery {failed}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Delivery {failed} is pending again")
    run_worker(page_rt)
    with page_rt.sessions() as session:
        assert session.get(Delivery, failed).status == "applied"
    page.reload()
    expect(page.get_by_role("button", name=f"Replay delivery {failed}")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "status-project.png"), full_page=True)

    # Keyboard: the first Tab reaches the skip link, which moves to the content.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()

    # A phone: nothing wider than the screen but the tables' own scrolling boxes.
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.context.add_cookies(page.context.cookies())
    phone.goto(served.base + "/status")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    phone.screenshot(path=str(ARTIFACTS / "status-phone.png"), full_page=True)


def test_a_database_outage_is_a_page_that_says_so(tmp_path, redis_url):
    dead = f"postgresql://postgres@127.0.0.1:{launcher.free_port()}/test"
    receiver = Receiver(Runtime(make_settings(tmp_path, dead, redis_url, api_token=TOKEN)))
    try:
        signed = receiver.http.post(receiver.base + "/status/login", data={"token": TOKEN},
                                    allow_redirects=False, timeout=10)  # fmt: skip
        assert signed.status_code == 302  # signing in needs no database
        answer = receiver.get("/status")
    finally:
        receiver.close()
    assert answer.status_code == 503
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "The database or Redis does not answer" in answer.text
