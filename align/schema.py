"""Base class for every typed section of params.yaml, and validation errors as key paths."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored); values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NestedError(ValueError):
    """Problems below the field being validated, found by a validator that checks a nested
    document itself (e.g. per-dataset overrides): each is (key path under the field, message).

    pydantic would place all of them at the field; `describe_errors` appends each path to it.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))
        self.problems = problems


def http_url_problem(url: str) -> str | None:
    """Why `url` cannot be downloaded over HTTP(S), or None when it can be tried."""
    if any(character.isspace() for character in url):
        return "spaces must be escaped as %20"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsing the port is what finds a malformed one)
    except ValueError as error:
        return f"malformed URL ({error})"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs can be downloaded"
    if not parts.hostname:
        return "the URL names no host"
    return None


def _check_http_url(url: str) -> str:
    problem = http_url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
"""A param holding an http(s) URL, checked when the params are loaded; kept as written."""


def describe_errors(error: ValidationError) -> list[tuple[str, str]]:
    """(dotted key path, message) for every problem in `error`, nested ones expanded."""
    described = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        nested = item.get("ctx", {}).get("error")
        if isinstance(nested, NestedError):
            described += [(f"{key}.{sub}" if key else sub, text) for sub, text in nested.problems]
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against params.yaml's documented keys)"
        elif "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        described.append((key, message))
    return described
