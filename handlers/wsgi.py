"""The app for any WSGI server (``handlers.wsgi:app``); annosync itself serves it with
``python -m handlers.serve``, and ``bench/`` with the servers it compares."""

from config.settings import load_settings
from handlers.app import create_app
from sync.logs import configure_logging

settings = load_settings()
configure_logging(settings.log_level, settings.secret_values(), settings.log_format)
app = create_app(settings)
