"""The pages of the docs and their code blocks, as the docs tests read them.

The docs are README.md and every page under docs/. A code block is a fenced block (```` ```lang ````, indented
ones inside admonitions and tabs included); its info string may give it a ``title="NAME"``, which the site
shows above it (Material for MkDocs) and the docs harness reads as a file's name. A shell block's commands are
its lines, continuation lines joined; a ``console`` block's are its ``$ `` lines, each followed by its output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
TITLE = re.compile(r'\btitle="(?P<title>[^"]+)"')
SHELL = {"bash", "sh", "shell"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the block's first line of code
    lang: str
    title: str | None
    body: str  # dedented by the fence's indent


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str  # continuation lines joined, comments kept
    output: tuple[str, ...] | None = None  # a console block's: the lines it quotes after the command

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}: {self.text}"


def blocks(page: Path) -> Iterator[Block]:
    text = page.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        title = TITLE.search(match["info"])
        line = text.count("\n", 0, match.start("body")) + 1
        yield Block(page, line, match["lang"], title["title"] if title else None, body)


def commands(block: Block) -> list[Command]:
    """The commands of a shell or console block, in order; none for any other block."""
    if block.lang not in SHELL | {"console"}:
        return []
    found: list[Command] = []
    pending, start = "", 0
    output: list[str] | None = None
    for offset, raw in enumerate(block.body.splitlines()):
        line = raw.strip()
        if block.lang == "console" and not pending:
            if not line.startswith("$ "):
                if output is not None:
                    output.append(raw.rstrip())
                continue  # the output a console block shows
            line = line.removeprefix("$ ")
        if not pending:
            start = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line and not line.startswith("#"):
            if found and output is not None:
                found[-1] = Command(found[-1].page, found[-1].line, found[-1].text, tuple(output))
            found.append(Command(block.page, start, line))
            output = [] if block.lang == "console" else None
    if found and output is not None:
        found[-1] = Command(found[-1].page, found[-1].line, found[-1].text, tuple(output))
    return found


def all_commands() -> list[Command]:
    return [command for page in PAGES for block in blocks(page) for command in commands(block)]
