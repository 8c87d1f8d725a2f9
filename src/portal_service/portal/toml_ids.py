"""The `ids` of PORTAL_CONFIG_FILE's configurations, edited in the file's text.

tomllib cannot write, and rewriting the file from its parsed form would drop the
operator's comments and layout. So the edit is textual and targeted (the `ids` of one
configuration), and then checked: the edited text must parse to exactly the old data
with those ids set, or the file is left alone and the ids are reported instead.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from typing import Any

_HEADER = re.compile(r"^\s*\[(?!\[)(?P<key>[^\]#]+)\]\s*(?:#.*)?$")


def _header_path(line: str) -> tuple[str, ...] | None:
    match = _HEADER.match(line)
    if match is None:
        return None
    try:
        data: Any = tomllib.loads(f"[{match.group('key')}]\n")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        path.append(key)
        data = data[key]
    return tuple(path)


def _section(lines: list[str], path: tuple[str, ...]) -> tuple[int, int] | None:
    """(header index, end index) of the `[path]` table, the end being the next header."""
    start = None
    for index, line in enumerate(lines):
        is_header = line.lstrip().startswith("[")
        if start is not None and is_header:
            return start, index
        if is_header and _header_path(line) == path:
            start = index
    return (start, len(lines)) if start is not None else None


def _set_id(text: str, name: str, mode: str, configuration_id: str) -> str:
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    value = json.dumps(configuration_id)  # a bpc_ id: a valid TOML basic string
    ids_table = _section(lines, ("configurations", name, "ids"))
    if ids_table is not None:
        start, end = ids_table
        for index in range(start + 1, end):
            match = re.match(rf'^(\s*)"?{mode}"?\s*=', lines[index])
            if match is not None:
                lines[index] = f"{match.group(1)}{mode} = {value}{newline}"
                return "".join(lines)
        lines.insert(start + 1, f"{mode} = {value}{newline}")
        return "".join(lines)
    table = _section(lines, ("configurations", name))
    if table is not None:
        start, end = table
        for index in range(start + 1, end):
            line = lines[index]
            inline = re.match(r"^(\s*)ids\s*=\s*\{[^}]*\}(.*)$", line.rstrip("\r\n"))
            if inline is not None:
                ids: dict[str, Any] = tomllib.loads(line[: line.index("}") + 1])["ids"]
                ids[mode] = configuration_id
                body = ", ".join(f"{k} = {json.dumps(v)}" for k, v in ids.items())
                lines[index] = f"{inline.group(1)}ids = {{ {body} }}{inline.group(2)}{newline}"
                return "".join(lines)
            dotted = re.match(rf'^(\s*)ids\s*\.\s*"?{mode}"?\s*=', line)
            if dotted is not None:
                lines[index] = f"{dotted.group(1)}ids.{mode} = {value}{newline}"
                return "".join(lines)
        lines.insert(start + 1, f"ids = {{ {mode} = {value} }}{newline}")
        return "".join(lines)
    # The configuration is only declared through sub-tables (or not as a table at all):
    # a table of its own at the end; the check below refuses it if TOML does not allow it.
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines.append(newline)
    lines.append(f"{newline}[configurations.{name}.ids]{newline}{mode} = {value}{newline}")
    return "".join(lines)


def with_ids(text: str, ids: dict[str, str], *, mode: str) -> str | None:
    """`text` with `ids` (configuration name → id) set in each configuration's `ids` for
    `mode`, every other line as it was; None if the edit cannot be made safely."""
    expected = copy.deepcopy(tomllib.loads(text))
    edited = text
    for name in sorted(ids):
        edited = _set_id(edited, name, mode, ids[name])
        entry = expected.setdefault("configurations", {}).setdefault(name, {})
        entry.setdefault("ids", {})[mode] = ids[name]
    try:
        parsed = tomllib.loads(edited)
    except tomllib.TOMLDecodeError:
        return None
    return edited if parsed == expected else None
