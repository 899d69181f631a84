"""The receiver's Flask application factory."""

from __future__ import annotations

from flask import Flask

from config.settings import Settings
from handlers import api, generations, health, metrics, snapshots, status_page, webhooks
from handlers.errors import IdConverter, register_error_handlers
from sync.archives import ArchivePool
from sync.group_commit import GroupCommit
from sync.runtime import Runtime


def create_app(settings: Settings, runtime: Runtime | None = None) -> Flask:
    """A receiver for ``settings`` (blueprints: webhooks, health, api, generations,
    snapshots, metrics, the status page)."""
    app = Flask("annosync")
    app.url_map.converters["id"] = IdConverter
    runtime = runtime or Runtime(settings)
    app.config["RUNTIME"] = runtime
    app.config["RECORDER"] = GroupCommit(runtime)
    app.config["ARCHIVES"] = ArchivePool(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    register_error_handlers(app)
    metrics.install(app, runtime)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(generations.bp)
    app.register_blueprint(snapshots.bp)
    app.register_blueprint(metrics.bp)
    status_page.configure(app, settings.api_token)
    app.register_blueprint(status_page.bp)
    return app
