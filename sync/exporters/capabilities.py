"""Which formats fit a label config, as Label Studio's export dialog offers them.

An exporter declares the control tags it can export (``supports``, empty: any config) and
the object tags those controls must label (``objects``, empty: any). A format fits when
one of its control tags is in the config pointing at one of its object tags.
"""

from __future__ import annotations

from typing import Any

from sync.exporters.base import Exporter, exporter_names, get_exporter


def unfit_reason(exporter: Exporter, config: dict[str, Any] | None) -> str | None:
    """Why ``exporter`` cannot export a project with this parsed config; None when it can
    (or when the config is unknown)."""
    if config is None or not exporter.supports:
        return None
    objects = {obj["name"]: obj["type"] for obj in config.get("objects", [])}
    for control in config.get("controls", []):
        if control["type"] not in exporter.supports:
            continue
        targets = {objects.get(name) for name in control["to_name"]}
        if not exporter.objects or targets & exporter.objects or not objects:
            return None
    need = " or ".join(sorted(exporter.supports))
    on = f" on {' or '.join(sorted(exporter.objects))}" if exporter.objects else ""
    have = sorted({c["type"] for c in config.get("controls", [])})
    return (
        f"{exporter.name} needs {need}{on}; the label config has "
        f"{', '.join(have) if have else 'no control tags'}"
    )


def list_formats(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every format with ``disabled`` (and the reason) for this config."""
    out = []
    for name in exporter_names():
        exporter = get_exporter(name)
        reason = unfit_reason(exporter, config)
        entry = {
            "name": name,
            "title": exporter.title,
            "folder": exporter.folder,
            "tags": sorted(exporter.supports),
            "disabled": reason is not None,
        }
        if reason:
            entry["reason"] = reason
        out.append(entry)
    return out
