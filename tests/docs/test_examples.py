"""Every command the docs show is one a reader can copy today: the CLI accepts it, and its months can be billed.

The docs are README.md and every page under docs/. A command is a line of a ``bash``/``sh``/``shell`` code block
(or a ``$ `` line of a ``console`` block), continuation lines joined. Each ``soracharge`` command is parsed by the
CLI itself (Typer's click command, nothing run): an unknown option, a missing argument or a month the CLI refuses
fails here, named with its page and line. Every month (``yyyyMM``) in any command, ``make demo MONTH=…`` and the
AWS CLI's inputs included, must be one Soracom can bill today (over, and within its last 18 months), so an
example never goes stale unnoticed. Shell substitutions such as ``$(date -d '-6 months' +%Y%m)`` are expanded by
bash, as the reader's shell would; ``<placeholders>`` are left to the reader (a placeholder named for a month is
read as last month).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from soracharge.errors import MonthOutOfRangeError
from soracharge.models.months import ensure_billable, previous_month
from soracharge_local.cli import app
from typer._click import exceptions as click  # Typer 0.29 bundles its own click: its errors are these

from tests.docs.pages import REPO, Command, all_commands

#: A month as the docs write one: 2000-2099, January to December, standing alone.
MONTH = re.compile(r"(?<![\w.-])(20\d\d(?:0[1-9]|1[0-2]))(?![\w-])")
PLACEHOLDER = re.compile(r"<([A-Za-z][\w .|/-]*)>")
SUBSTITUTION = re.compile(r"\$\((?P<inner>[^()]*)\)")


def expand(text: str) -> str:
    """The command as the reader's shell runs it: ``$(...)`` substitutions of ``date`` expanded by bash."""

    def substitute(match: re.Match[str]) -> str:
        inner = match["inner"]
        if not inner.startswith("date ") or "$" in inner:
            return match[0]  # not a date, or one of a shell variable (a loop's): left as the docs write it
        done = subprocess.run(["/bin/bash", "-c", inner], capture_output=True, text=True, check=True, timeout=10)  # noqa: S603
        return done.stdout.strip()

    while (expanded := SUBSTITUTION.sub(substitute, text)) != text:  # the innermost first: $(date -d "$(date …)")
        text = expanded
    return text


def soracharge_invocations(text: str) -> list[list[str]]:
    """The argument lists of the ``soracharge`` commands in a shell line (after ``&&``, ``;``, ``|`` too)."""
    today = datetime.now(UTC).date()
    last = previous_month(today)

    def placeholder(match: re.Match[str]) -> str:
        name = match[1].lower()
        return last if "month" in name or "yyyy" in name else "PLACEHOLDER-" + re.sub(r"\W", "-", name)

    lexer = shlex.shlex(PLACEHOLDER.sub(placeholder, expand(text)), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    found: list[list[str]] = []
    current: list[str] = []
    for word in [*words, ";"]:
        if set(word) <= set(";&|"):
            if current and Path(current[0]).name == "soracharge":
                found.append(current[1:])
            current = []
        elif current or not re.fullmatch(r"\w+=\S*", word):  # leading VAR=value assignments
            current.append(word)
    return found


def parse(arguments: list[str]) -> None:
    """Parse ``soracharge <arguments>`` as the CLI would, running nothing; raise click's error when it refuses.

    A group (the app, ``mapping``) resolves its subcommand, which parses the rest, down to a command."""
    command: Any = typer.main.get_command(app)
    parent: Any = None
    name = "soracharge"
    while True:
        context = command.make_context(name, list(arguments), parent=parent)
        if not hasattr(command, "resolve_command"):
            return
        rest = [*context._protected_args, *context.args]
        if not rest:
            return
        name, command, arguments = command.resolve_command(context, rest)
        parent = context


COMMANDS = all_commands()
CLI = [(command, args) for command in COMMANDS for args in soracharge_invocations(command.text)]


def test_the_docs_show_commands_to_check() -> None:
    # A harness that finds nothing checks nothing: the README alone shows make demo, make test and soracharge commands.
    assert any(command.page.name == "README.md" and "make demo" in command.text for command in COMMANDS)
    assert len(CLI) >= 10, [str(command) for command, _ in CLI]


@pytest.mark.parametrize(("command", "arguments"), CLI, ids=[f"{c.page.name}:{c.line}" for c, _ in CLI])
def test_every_soracharge_command_the_docs_show_is_accepted_by_the_cli(command: Command, arguments: list[str]) -> None:
    try:
        parse(arguments)
    except click.BadParameter as error:
        # A file the reader has (bill.csv, a placeholder) need not exist here; anything else is the docs' fault.
        if "does not exist" not in error.format_message():
            pytest.fail(f"{command}\n  the CLI refuses it: {error.format_message()}")
    except typer.Exit:
        pass  # --help
    except click.ClickException as error:
        pytest.fail(f"{command}\n  the CLI refuses it: {error.format_message()}")


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.page.name}:{c.line}" for c in COMMANDS])
def test_every_month_in_a_command_can_be_billed_today(command: Command) -> None:
    today = datetime.now(UTC).date()
    for month in MONTH.findall(expand(command.text)):
        try:
            ensure_billable(month, today)
        except MonthOutOfRangeError as error:
            pytest.fail(f"{command}\n  {error}: write the month relative to today, or as <yyyyMM>")


#: A Markdown link or image: its target up to a space, ``)`` or ``#``.
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s#]*)(?:#[^)\s]*)?(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize(
    "page", [REPO / "README.md", *sorted((REPO / "examples").glob("*.md")), *sorted((REPO / "events").glob("*.md"))]
)
def test_every_relative_link_outside_the_site_resolves_in_a_clone(page: Path) -> None:
    # mkdocs --strict checks the links between the pages of docs/; these pages are read on GitHub or in a clone.
    text = page.read_text(encoding="utf-8")
    broken = [
        match["target"]
        for match in LINK.finditer(text)
        if match["target"]
        and not re.match(r"[a-z]+:", match["target"])
        and not (page.parent / match["target"]).exists()
    ]
    assert not broken, f"{page.relative_to(REPO)} links to what a clone does not have: {broken}"
    assert "../shared" not in text, f"{page.relative_to(REPO)} names ../shared, which a clone does not have"
