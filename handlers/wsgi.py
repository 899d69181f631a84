"""WSGI entry point for production servers: ``gunicorn handlers.wsgi:app``."""

from config.settings import load_settings
from handlers.app import create_app
from sync.logs import configure_logging

settings = load_settings()
configure_logging(settings.log_level, settings.secret_values())
app = create_app(settings)
