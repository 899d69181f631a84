"""How a setting's text becomes its value: each function takes the environment's string and
returns the value or raises ValueError saying what is expected (the settings list names
the variable)."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlparse


def text(value: str) -> str:
    return value.strip()


def optional_text(value: str) -> str | None:
    return value.strip() or None


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must be zero or a positive number")
    return number


def json_depth(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 200:  # what is stored is re-serialised, which stops at 254 levels
        raise ValueError("must be from 1 to 200")
    return number


def name_list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip().upper() for p in value.split(",") if p.strip()))


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be zero or a positive integer")
    return number


def split(value: str) -> tuple[tuple[str, float], ...]:
    parts = []
    for item in value.split(","):
        name, _, share = item.partition("=")
        if not re.fullmatch(r"[a-z]{1,16}", name.strip()) or float(share) < 0:
            raise ValueError("must look like train=80,val=10,test=10")
        parts.append((name.strip(), float(share)))
    if not parts or sum(share for _, share in parts) <= 0:
        raise ValueError("must look like train=80,val=10,test=10")
    return tuple(parts)


def bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def url_list(value: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in value.split(",") if part.strip())
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError(f"{url[:80]!r} is not an http(s) URL")
    return urls


def secret_list(value: str) -> tuple[str, ...]:
    secrets = tuple(part.strip() for part in value.split(",") if part.strip())
    for secret in secrets:
        if len(secret) < 8:
            raise ValueError("each secret must be at least 8 characters")
    return secrets


HEADER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def header_name(value: str) -> str:
    value = value.strip()
    if not HEADER_NAME.match(value):
        raise ValueError("must be a header name of letters, digits, '_' or '-'")
    return value


def database_url(value: str) -> str:
    scheme = value.split(":", 1)[0]
    if not scheme.startswith(("sqlite", "postgresql")):
        raise ValueError("must be a sqlite:/// or postgresql:// URL")
    return value.strip()


def redis_url(value: str) -> str:
    if urlparse(value).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value.strip()


def storage_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme == "file" and parsed.path:
        return value.strip()
    if parsed.scheme == "s3" and parsed.netloc:
        return value.strip()
    raise ValueError("must be file:///absolute/path or s3://bucket[/prefix]")


def http_url(value: str) -> str | None:
    if not value.strip():
        return None
    if urlparse(value).scheme not in {"http", "https"}:
        raise ValueError("must be an http:// or https:// URL")
    return value.strip().rstrip("/")


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return lowered

    return parse
