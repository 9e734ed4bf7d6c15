"""``key=value`` overrides for YAML configs: the one rule every CLI and job follows."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from harmonize.errors import ConfigError, HarmonizeError

__all__ = ["apply_overrides", "config_error", "yaml_error"]


def _value(text: str) -> Any:
    """One override value parsed as YAML, unless YAML would drop part of it as a comment
    (``/path/proj #2`` is a path, not ``/path/proj``): then the text itself."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text.strip()
    if "#" in text and "#" not in yaml.safe_dump(value):
        return text.strip()
    return value


def apply_overrides(
    data: Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None
) -> dict[str, Any]:
    """Merge ``overrides`` into a copy of ``data``.

    Parameters
    ----------
    data
        The YAML mapping.
    overrides
        A mapping of (dotted) keys to values, or ``"key=value"`` strings whose value is parsed as
        YAML (``"train.epochs=3"``, ``"bbox=[1, 2, 3, 4]"``). A ``#`` is never a YAML
        comment here: ``"out=/data/proj #2"`` keeps its ``#2``.
    """
    out = copy.deepcopy(dict(data))
    if not overrides:
        return out
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = []
        for s in overrides:
            if "=" not in s:
                raise HarmonizeError(f"override {s!r} must look like key=value (e.g. out=/tmp/run)")
            k, v = s.split("=", 1)
            pairs.append((k.strip(), _value(v)))
    for key, value in pairs:
        node = out
        parts = str(key).split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = value
    return out


_HINT = "Fix these keys in the file or the key=value overrides."


def config_error(exc: Exception, what: str = "settings", hint: str = _HINT) -> ConfigError:
    """A pydantic ``ValidationError`` as a :class:`ConfigError`: one line per wrong field, with
    its dotted key (as an override would name it), what is wrong and the value given.

    Parameters
    ----------
    exc
        The ``ValidationError``.
    what
        What was validated (``"train config"``, ``"WorldConfig settings"``).
    hint
        What to do, after the list.
    """
    from harmonize.redact import redact_text

    lines = []
    for e in getattr(exc, "errors", lambda: [])():
        key = ".".join(str(p) for p in e.get("loc", ())) or "(top level)"
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            msg = "unknown setting (a typo?)"
        given = repr(e.get("input"))
        lines.append(f"  {key}: {msg} (given {given[:80]})")
    body = "\n".join(lines) or f"  {exc}"
    return ConfigError(redact_text(f"invalid {what}:\n{body}\n{hint}"))


def yaml_error(exc: Exception, path: object) -> ConfigError:
    """A YAML parse error as a :class:`ConfigError` naming the file, line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{path} is not valid YAML{where}: {problem}. Fix the file (check indentation, "
                       "brackets and quotes).")
