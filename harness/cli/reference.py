"""The command reference of the docs site, written from the parser itself.

Why generated: a hand-kept reference drifted from the flags the commands really take. The docs
build (``scripts/docs_hooks.py``, a mkdocs hook) replaces the marker in ``docs/commands.md``
with this text on every build, so the page is the parser: a new command or flag appears there
with nothing to edit.
"""

from __future__ import annotations

import argparse

from harness.cli.main import GROUPS, build_parser

#: where the generated reference goes in docs/commands.md
MARKER = "<!-- command reference: generated from harness.cli.main at build time -->"


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option(action: argparse.Action) -> tuple[str, str, str]:
    """An argument's row: how it is written, what it takes, and what it does (with its default)."""
    if action.option_strings:
        name = ", ".join(f"`{o}`" for o in action.option_strings)
    else:
        name = f"`{action.metavar or action.dest}`"
    if action.choices is not None and not isinstance(action.choices, dict):
        takes = " \\| ".join(f"`{c}`" for c in action.choices)
    elif action.nargs == 0:
        takes = ""
    else:
        takes = f"`{action.metavar or action.dest.upper()}`" if action.option_strings else ""
    if action.nargs in ("*", "+"):
        takes = (takes or name) + " ..."
    said = action.help or ""
    if action.required and action.option_strings:
        said = f"required. {said}"
    if action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0:
        said += f" (default: `{action.default}`)"
    return name, takes, _cell(said)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def command_reference() -> str:
    """Markdown: per group, each command's one-line purpose, usage and every argument."""
    parser = build_parser()
    sub = _subparsers(parser)
    said = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    out: list[str] = []
    for title, modules in GROUPS:
        out += [f"## {title.capitalize()}", ""]
        for module in modules:
            command: argparse.ArgumentParser = sub.choices[module.NAME]
            usage = " ".join(command.format_usage().removeprefix("usage: ").split())
            out += [f"### harness {module.NAME}", "", _cell(said[module.NAME]), "", "```", usage, "```", ""]
            rows = [_option(a) for a in command._actions if not isinstance(a, argparse._HelpAction)]
            if rows:
                out += ["| argument | takes | what it does |", "| --- | --- | --- |"]
                out += [f"| {name} | {takes} | {text} |" for name, takes, text in rows]
                out.append("")
    return "\n".join(out)


def render(page: str) -> str:
    """``page`` with the marker replaced by the reference; a page without the marker is refused
    (the reference would silently vanish from the site)."""
    if MARKER not in page:
        raise ValueError(f"the command reference page has no marker {MARKER!r}")
    return page.replace(MARKER, command_reference())
