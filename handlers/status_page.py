"""``/status``: a server-rendered status page for people, behind the API token.

Signing in with ``ANNOSYNC_API_TOKEN`` starts a session (a signed cookie: HttpOnly,
SameSite=Strict, scoped to ``/status``). The session key is derived from the token, so every
receiver process accepts the same sessions and changing the token ends them all. Every POST
carries the session's CSRF token (the synchronizer-token pattern), compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from handlers.attachment import export_download
from sync import dashboard, triggers
from sync.errors import Unavailable, UnknownProject
from sync.replay import replay

bp = Blueprint("status_page", __name__, url_prefix="/status", template_folder="templates")
REFRESH_S = 5  # how often an open page refreshes its figures


def configure(app: Flask, api_token: str | None) -> None:
    """The session cookie of the status page (nothing when no API token is set: the page
    then says how to turn it on)."""
    if api_token:
        app.secret_key = hmac.new(api_token.encode(), b"annosync status page", "sha256").digest()
    app.config.update(
        SESSION_COOKIE_NAME="annosync_status",
        SESSION_COOKIE_PATH="/status",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.jinja_env.filters["duration"] = duration


def duration(seconds: float | None) -> str:
    """``0``, ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 10 min``: readable lags."""
    if not seconds:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _token() -> str | None:
    return current_app.config["RUNTIME"].settings.api_token


@bp.before_request
def csp_nonce():
    g.csp_nonce = secrets.token_urlsafe(16)


@bp.after_request
def security_headers(response):
    """A strict Content-Security-Policy (the one inline script runs by its nonce) and no
    caching of pages that show the instance's state."""
    nonce = g.get("csp_nonce", "")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.before_request
def require_session():
    if not _token():
        return render_template("status/disabled.html"), 404
    if request.endpoint in ("status_page.login", "status_page.static"):
        return None
    if not session.get("signed_in"):
        return redirect(url_for("status_page.login", next=request.full_path.rstrip("?")))
    if request.method == "POST" and not _csrf_valid(request.form.get("csrf_token", "")):
        abort(400, "the form is stale or came from another site: reload the page and retry")
    return None


def _csrf_valid(presented: str) -> bool:
    expected = session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


@bp.app_context_processor
def page_context():
    return {
        "csrf_token": session.get("csrf", ""),
        "csp_nonce": g.get("csp_nonce", ""),
        "refresh_s": REFRESH_S,
    }


@bp.errorhandler(UnknownProject)
def unknown_project(exc: UnknownProject):
    return render_template("status/message.html", title="Not found", message=str(exc)), 404


@bp.errorhandler(Unavailable)
def unavailable(_exc: Unavailable):
    message = "The database or Redis does not answer; this page retries on its own."
    return render_template("status/message.html", title="Unavailable", message=message), 503


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        presented = request.form.get("token", "").strip().encode()
        if hmac.compare_digest(presented, (_token() or "").encode()):
            session.clear()
            session.update(signed_in=True, csrf=secrets.token_urlsafe(32))
            return redirect(_local(request.args.get("next")))
        error = "That is not the API token (ANNOSYNC_API_TOKEN)."
    status = 401 if error else 200
    return render_template("status/login.html", error=error), status


def _local(target: str | None) -> str:
    """``target`` if it is a path on this page (never another site: no open redirect)."""
    if target and target.startswith("/status") and not urlsplit(target).netloc:
        return target
    return url_for("status_page.overview")


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("status_page.login"))


@bp.get("")
def overview():
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as db:
        view = dashboard.overview(db)
    return render_template("status/overview.html", **view)


@bp.get("/projects/<id:project_id>")
def project(project_id: int):
    rt = current_app.config["RUNTIME"]
    with rt.sessions() as db:
        view = dashboard.project(db, project_id, rt.settings.export_formats)
    return render_template("status/project.html", project_id=project_id, **view)


@bp.get("/projects/<id:project_id>/export/<fmt>")
def download(project_id: int, fmt: str):
    return export_download(project_id, fmt.upper())


@bp.post("/deliveries/<id:delivery_id>/replay")
def replay_delivery(delivery_id: int):
    done = replay(current_app.config["RUNTIME"], [delivery_id])
    for line in done.refused:
        flash(line, "error")
    if done.count:
        flash(f"Delivery {delivery_id} is pending again; a worker applies it now.", "ok")
    return redirect(_local(request.form.get("back")))


@bp.post("/triggers/<id:delivery_id>/replay")
def replay_trigger(delivery_id: int):
    if triggers.replay(current_app.config["RUNTIME"], delivery_id):
        flash(f"Trigger delivery {delivery_id} is sent again now.", "ok")
    else:
        flash(f"no trigger delivery {delivery_id}", "error")
    return redirect(_local(request.form.get("back")))
