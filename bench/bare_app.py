"""The baseline: a Flask endpoint that answers 200 without doing anything."""

from flask import Flask

app = Flask("bare")


@app.post("/webhooks/label-studio/<int:project_id>")
def receive(project_id: int):
    return {"status": "ok"}, 200


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
