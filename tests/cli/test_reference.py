"""The docs site's command reference is written from the parser (harness.cli.reference): every
command and every option of every command is in it, grouped as ``harness --help`` groups them,
and the page it fills keeps its marker (without it the reference would vanish from the site)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.cli.main import COMMANDS, GROUPS, build_parser
from harness.cli.reference import MARKER, command_reference, render

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_and_option_is_in_the_reference() -> None:
    text = command_reference()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for module in COMMANDS:
        assert f"### harness {module.NAME}\n" in text
        for action in sub.choices[module.NAME]._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, f"{module.NAME} {option}"


def test_the_groups_hold_every_command_once_in_help_order() -> None:
    grouped = [m.NAME for _, modules in GROUPS for m in modules]
    assert grouped == [m.NAME for m in COMMANDS] and len(set(grouped)) == len(grouped)
    text = command_reference()
    assert [text.index(f"### harness {name}\n") for name in grouped] == sorted(
        text.index(f"### harness {name}\n") for name in grouped
    )


def test_help_lists_each_command_once_by_purpose_under_a_clean_description() -> None:
    help_text = build_parser().format_help()
    assert "``" not in help_text and "|" not in help_text.split("\n\n")[1]
    for title, modules in GROUPS:
        assert f"\n{title}:\n" in help_text
        for module in modules:
            assert help_text.count(f"\n  {module.NAME} ") == 1, module.NAME


def test_the_commands_page_keeps_the_marker_and_a_page_without_it_is_refused() -> None:
    page = (ROOT / "docs" / "commands.md").read_text()
    assert page.count(MARKER) == 1
    assert "### harness run\n" in render(page)
    with pytest.raises(ValueError, match="no marker"):
        render("# Commands\n")
