"""mkdocs hook (mkdocs.yml ``hooks:``): the command reference page is written from the parser
at build time (harness.cli.reference), so it cannot drift from the commands."""

from __future__ import annotations

from typing import Any


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "commands.md":
        return markdown
    from harness.cli.reference import render

    return render(markdown)
