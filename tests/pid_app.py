"""A WSGI app that answers with the pid of the process serving it (server tests).

With ``PID_APP_MARKER`` set to a path, every worker but the first to boot takes
``PID_APP_SLOW_S`` seconds longer to load the app: a sibling that starts late.
"""

import os
import time

_marker = os.environ.get("PID_APP_MARKER")
if _marker:
    try:
        os.close(os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        time.sleep(float(os.environ.get("PID_APP_SLOW_S", "2")))


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
