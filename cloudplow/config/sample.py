"""Render the configuration schema for people: the sample file and the reference table.

Both come from `schema.ROOT`, so they change with the schema; a test checks
that the committed `config.yaml.sample` equals `render_sample()`. Regenerate:

    python -m cloudplow.config.sample > config.yaml.sample
    python -m cloudplow.config.sample --reference     # markdown for the README
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap

from cloudplow.config import schema
from cloudplow.config.load import parse_yaml
from cloudplow.config.schema import Key

SAMPLE_WIDTH = 92
_SECTION_KINDS = ("section", "named_sections", "section_list")
_PLAIN_SCALAR_RE = re.compile(r"[A-Za-z0-9_./~+-][A-Za-z0-9_./~+ -]*")

HEADER = f"""\
# cloudplow configuration. Generated from cloudplow/config/schema.py; regenerate with
#   python -m cloudplow.config.sample > config.yaml.sample
#
# {schema.SIZES_DOC}
# {schema.DURATIONS_DOC}
# {schema.PATHS_DOC}
# Unknown keys and keys without a value are errors: remove a key to get its default.
# Lines "# key: value" are optional settings: remove the "# " to use them.
# Check a configuration with: cloudplow --config PATH check-config"""

TYPE_NAMES = {
    "section": "section",
    "named_sections": "name → section",
    "section_list": "list of sections",
    "str": "text",
    "int": "integer",
    "bool": "true/false",
    "size": "size",
    "duration": "duration",
    "path": "path",
    "time": '"HH:MM"',
    "choice": "",  # the choices themselves
    "remote": '"remote:path"',
    "str_list": "list of text",
    "regex_list": "list of regexes",
    "env": "VARIABLE: value",
    "flags": "--flag: value",
    "secret": "text (secret)",
    "url": "URL",
    "secret_list": "list of text (secrets)",
    "choice_list": "list of choices",
    "rate_table": "streams: size per second",
}


def render_sample(all_keys: bool = False) -> str:
    """
    Return the commented sample configuration (the text of config.yaml.sample).
    With all_keys, optional settings are written out instead of commented out
    (for tests, and for people who want every key in front of them).
    """
    lines = [HEADER]
    for key in schema.ROOT.children:
        lines.append("")
        lines.extend(_render_key(key, indent=0, commented=False, all_keys=all_keys))
    return "\n".join(lines) + "\n"


def render_reference() -> str:
    """Return a markdown table of every configuration key, for the README."""
    rows = [
        "| Key | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for path, key in schema.walk(schema.ROOT):
        rows.append(
            f"| `{path}` | {_type_name(key)} | {_reference_default(key)} | {key.doc.replace('|', '&#124;')} |"
        )
    return "\n".join(rows) + "\n"


def format_scalar(value: object) -> str:
    """
    Given a str, int, float or bool, return it as a YAML scalar: plain when it
    reads back unchanged and has nothing surprising in it, else double-quoted.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN_SCALAR_RE.fullmatch(text) and parse_yaml(f"k: {text}") == {"k": text}:
        return text
    # JSON strings are valid YAML double-quoted scalars.
    return json.dumps(text, ensure_ascii=False)


def _format_inline(value: object) -> str:
    if isinstance(value, list | tuple):
        # Quoted inside a flow list, where , [ ] { } would end a plain scalar.
        items = (json.dumps(item) if isinstance(item, str) else format_scalar(item) for item in value)
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        items = (f"{format_scalar(name)}: {format_scalar(item)}" for name, item in value.items())
        return "{" + ", ".join(items) + "}"
    return format_scalar(value)


def _is_commented(key: Key, all_keys: bool) -> bool:
    """A key is commented out in the sample if it says so or everything inside it is."""
    if all_keys:
        return False
    if key.commented:
        return True
    return key.kind in _SECTION_KINDS and all(_is_commented(child, all_keys) for child in key.children)


def _doc_lines(key: Key, indent: int) -> list[str]:
    doc = key.doc
    if key.required:
        doc += " Required."
    elif (
        key.kind not in _SECTION_KINDS
        and key.default is not None
        and key.example is not None
        and key.example != key.default
    ):
        doc += f" Default: {_format_inline(key.default)}."
    width = max(40, SAMPLE_WIDTH - indent - 2)
    return [
        " " * indent + "# " + line
        for line in textwrap.wrap(doc, width=width, break_on_hyphens=False, break_long_words=False)
    ]


def _key_line(indent: int, commented: bool, text: str) -> str:
    return " " * indent + ("# " if commented else "") + text


def _render_key(key: Key, indent: int, commented: bool, all_keys: bool, bullet: bool = False) -> list[str]:
    """
    Given a key, return its sample lines at `indent`: doc comment, then the
    key with its shown value. `commented` turns key lines into "# key: ...";
    `bullet` makes this key the first of a list item ("- key: ...").
    """
    commented = commented or _is_commented(key, all_keys)
    # A list item's first key sits two columns left, after "- ".
    key_indent, marker = (indent - 2, "- ") if bullet else (indent, "")
    lines = _doc_lines(key, key_indent)
    head = f"{marker}{format_scalar(key.name)}:"
    value = key.shown_value
    if key.kind in _SECTION_KINDS:
        lines.append(_key_line(key_indent, commented, head))
        child_indent = indent + 2
        if key.kind == "named_sections":
            lines.append(_key_line(indent + 2, commented, f"{format_scalar(key.example)}:"))
            child_indent = indent + 4
        elif key.kind == "section_list":
            child_indent = indent + 4
        lines.extend(_render_children(key.children, child_indent, commented, all_keys, key.kind))
    elif isinstance(value, dict) and value:
        lines.append(_key_line(key_indent, commented, head))
        for name, item in value.items():
            lines.append(_key_line(indent + 2, commented, f"{format_scalar(name)}: {format_scalar(item)}"))
    else:
        lines.append(_key_line(key_indent, commented, f"{head} {_format_inline(value)}"))
    return lines


def _render_children(
    children: tuple[Key, ...], indent: int, commented: bool, all_keys: bool, parent_kind: str
) -> list[str]:
    """Render a section's children, with a blank line around each nested section."""
    lines: list[str] = []
    previous_was_section = False
    for index, child in enumerate(children):
        is_section = child.kind in _SECTION_KINDS
        if index and (is_section or previous_was_section):
            lines.append("")
        bullet = parent_kind == "section_list" and index == 0
        lines.extend(_render_key(child, indent, commented, all_keys, bullet=bullet))
        previous_was_section = is_section
    return lines


def _type_name(key: Key) -> str:
    if key.kind == "choice":
        return " &#124; ".join(f"`{choice}`" for choice in key.choices)
    return TYPE_NAMES[key.kind]


def _reference_default(key: Key) -> str:
    if key.required:
        return "**required**"
    if key.kind in _SECTION_KINDS:
        return "" if key.default is not None else "none"
    if key.default is None:
        return "none"
    return f"`{_format_inline(key.default)}`"


def main(argv: list[str] | None = None) -> int:
    """Given command-line arguments, print the sample (or --reference table) and return 0."""
    parser = argparse.ArgumentParser(
        prog="python -m cloudplow.config.sample",
        description="Print config.yaml.sample, or the README's configuration reference.",
    )
    parser.add_argument("--reference", action="store_true", help="print the markdown table")
    arguments = parser.parse_args(argv)
    sys.stdout.write(render_reference() if arguments.reference else render_sample())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
