"""TOML configuration of the dmuc daemons for throwaway testbeds (tests, demos, benchmarks)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def toml_value(value: Any) -> str:
    """A TOML literal (strings via JSON escaping, which TOML basic strings accept)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, Iterable):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def daemon_toml(
    *,
    jid: str,
    host: str,
    port: int,
    secret: str,
    db_path: Path | str,
    level: str = "debug",
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    slaves: Mapping[str, Iterable[str]] | None = None,
    extra_toml: str = "",
    storage_url: str | None = None,
) -> str:
    """The [component], [storage] and [log] tables every daemon needs, then `tables`
    (e.g. {"muc": {...}} or {"slave": {...}}), the master's [[slaves]], and raw extra TOML.
    Storage is the SQLite file `db_path` unless `storage_url` names another database."""
    sections: dict[str, Mapping[str, Any]] = {
        "component": {"jid": jid, "host": host, "port": port, "secret": secret},
        "storage": {"url": storage_url or f"sqlite:///{Path(db_path).resolve()}"},
        "log": {"level": level},
        **(tables or {}),
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items()), ""]
    for slave_jid, domains in (slaves or {}).items():
        lines += ["[[slaves]]", f"jid = {toml_value(slave_jid)}",
                  f"domains = {toml_value(list(domains))}", ""]
    if extra_toml.strip():
        lines += [extra_toml.strip(), ""]
    return "\n".join(lines)
