"""Every command the docs show, run as a reader runs it, and its output compared wherever the docs quote it.

**One page, one reader.** Each page's commands (tests/docs/pages.py reads them: the lines of its ``bash``
blocks, the ``$`` lines of its ``console`` blocks) are run in order, in one bash session of a scratch folder of
its own, as a reader follows the page top to bottom: a variable a line sets is there for the next. The folder
holds what a clone holds (``examples/``, ``events/``, ``bench/``, ``.venv/bin/soracharge``; ``soracharge`` is
on the ``PATH``, as after ``make install``), the files the page writes itself (a block with
``title="NAME"`` is written to NAME before the page's first command), and the reader's own files the pages
assume (READER_FILES). Waits are instant (``SORACHARGE_LOCAL_INSTANT_WAITS``); nothing else differs.

**What must hold.** Each command exits 0, or with the status its own comment names (``# ... (exit 1)``). A
``console`` block's output lines must each appear in the command's output (stdout and stderr, as a terminal
shows them), in order; ``...`` stands for lines left out; what changes from run to run is masked on both sides
(MASKS). ``soracharge simulate`` serves until Ctrl-C: it is run until it says where it serves, then given
Ctrl-C, and must stop cleanly (0, or 130: the shell's status of a program Ctrl-C ended). No command may print a
Python traceback, whatever its status. A page that talks to the simulators' ports has them running beside it, as
it says ("in another terminal").

**What is not run here, and why** (NOT_HERE): AWS and SAM (no account here; the commands' names are checked
against the template's outputs by tests/unit/test_template.py and by tests/docs/test_examples.py), downloads
from GitHub, ``make test`` (this suite) and the benchmarks (minutes each: ``make bench``). Each such line is
replaced by ``:``, so the lines around it still run; a line that needs what one of them made is given it by
READER_FILES. Real Soracom is the Soracom simulator here (STAND_INS), as it is for the whole local stack.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from soracharge.models.months import previous_month

from tests.docs.pages import PAGES, REPO, Command, blocks, commands
from tests.processes import rest_after_ctrl_c

VENV_BIN = REPO / ".venv" / "bin"
#: A line the docs show that cannot run on a machine with no AWS account and no network but the package registries.
NOT_HERE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:^|[;&|(`]\s*|\$\(\s*)aws\s"), "the AWS CLI needs an AWS account"),
    (re.compile(r"(?:^|[;&|]\s*)sam\s"), "SAM needs an AWS account (or Docker)"),
    (re.compile(r"\$\(output\s"), "reads a deployed stack's outputs"),
    (re.compile(r"^output\(\)"), "reads a deployed stack's outputs"),
    (re.compile(r"^git\s"), "needs the project's remote"),
    (re.compile(r"uv python (?:install|find)"), "downloads a CPython from GitHub"),
    (re.compile(r"^make test\b"), "the suite this test is part of"),
    (re.compile(r"^make (?:bench|layer-size)\b"), "make test runs layer-size; bench takes minutes (bench/README.md)"),
    (re.compile(r"bench/import_throughput\.py(?:\s+#|$)"), "16,000 SIMs, minutes: make bench"),
    (re.compile(r"bench/import_concurrency\.py"), "a benchmark of latencies: make bench"),
)
#: What stands in here for what the docs name: the Soracom simulator for Soracom's API, with its key.
STAND_INS = (
    ("https://api.soracom.io", "http://127.0.0.1:8080"),
    ("keyId-…", "keyId-simulator"),
    ("secret-…", "secret-simulator"),
)
#: Files the docs assume the reader has (their own bill, their mapping, a report copied from S3).
READER_FILES = (
    "bill.csv",  # a bill: last month's, exported from the Soracom simulator
    "my-bill.csv",
    "imported.csv",  # the file a month was imported from
    "corrected.csv",  # ...and the same month corrected: one row's quantity and amount changed
    "report.json",  # a report (a dry run's)
    "my-mapping.yaml",  # the example mapping, with the coupon item docs/how-it-works/reconciliation.md adds
)
COUPON_ITEM = """
  - match: "Soracom coupon"          # added as docs/how-it-works/reconciliation.md says
    resource: "6b4cb242-4a23-4596-a217-beaddbc496cb"
    sku: SORACOM-COUPON
"""
MASKS = (
    (re.compile(r"^ *\d+\.\ds  "), "   <s>  "),  # the seconds of a step
    (re.compile(r"\bfe_[0-9a-f]{4,}(…)?"), "fe_<id>"),  # the export's id, whole or cut
    (re.compile(r"\b\d{8}T\d{6}(\d+)?Z"), "<stamp>"),  # a run folder's time stamp
)
EXIT = re.compile(r"#.*\(exit (?P<status>\d+)[):]")
SIMULATE = re.compile(r"soracharge simulate\b")
SIMULATORS_PORT = "127.0.0.1:8080"
STEP_TIMEOUT = 300


@dataclass(frozen=True)
class Step:
    command: Command  # the first line's
    text: str  # as the docs write it: a loop's lines with it
    script: str  # what bash runs: the command, stand-ins in place, or ":" for a line not run here
    not_here: str | None

    @property
    def status(self) -> int:
        match = EXIT.search(self.text)
        return int(match["status"]) if match else 0


def steps(page: Path) -> list[Step]:
    """The page's commands as bash runs them; a ``for``/``while``/``if`` and its body are one step."""
    found: list[Step] = []
    group: list[Command] = []
    for block in blocks(page):
        for command in commands(block):
            group.append(command)
            opened = sum(bool(re.match(r"(for|while|until|if)\s", c.text)) for c in group)
            closed = sum(bool(re.match(r"(done|fi)\b", c.text)) for c in group)
            if opened > closed:
                continue
            text = "\n".join(c.text for c in group)
            reasons = [reason for pattern, reason in NOT_HERE for c in group if pattern.search(c.text)]
            script = text
            for name, stand_in in STAND_INS:
                script = script.replace(name, stand_in)
            script = re.sub(r"<yyyyMM>", previous_month(datetime.now(UTC).date()), script)
            found.append(Step(group[0], text, ": not here" if reasons else script, reasons[0] if reasons else None))
            group = []
    assert not group, f"{page}: a block ends inside {group[0]}"
    return found


def titled_files(page: Path) -> dict[str, str]:
    return {block.title: block.body for block in blocks(page) if block.title}


PAGES_RUN = [page for page in PAGES if any(step.not_here is None for step in steps(page))]


def masked(line: str) -> str:
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reader's files of READER_FILES, made once: last month's bill from the simulator, a dry run's report."""
    folder = tmp_path_factory.mktemp("reader")
    month = previous_month(datetime.now(UTC).date())
    environment = {**clean_environment(), "SORACHARGE_LOCAL_INSTANT_WAITS": "1"}
    soracharge = str(VENV_BIN / "soracharge")
    mapping = folder / "my-mapping.yaml"
    mapping.write_text((REPO / "examples/mapping.example.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    add_coupon_item(mapping)
    for arguments in (
        ["export", "--month", month, "--out", "bill.csv"],
        ["import", "bill.csv", "--month", month, "--mapping", str(REPO / "examples/mapping.example.yaml"), "--dry-run"],
    ):
        done = subprocess.run(  # noqa: S603
            [soracharge, *arguments], cwd=folder, env=environment, capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
        assert done.returncode == 0, done.stdout + done.stderr
    shutil.copy(folder / "out" / month / "bill.report.json", folder / "report.json")
    for copy in ("my-bill.csv", "imported.csv"):
        shutil.copy(folder / "bill.csv", folder / copy)
    lines = (folder / "bill.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = corrected(lines[1], lines[0])
    (folder / "corrected.csv").write_text("".join(lines), encoding="utf-8")
    assert sorted(path.name for path in folder.iterdir() if path.is_file()) == sorted(READER_FILES)
    return folder


def add_coupon_item(mapping: Path) -> None:
    text = mapping.read_text(encoding="utf-8")
    anchor = "\nitems:\n"
    assert anchor in text, "the example mapping has no items: section to add the coupon to"
    mapping.write_text(text.replace(anchor, anchor + COUPON_ITEM.lstrip("\n"), 1), encoding="utf-8")


def corrected(row: str, header: str) -> str:
    """The row with its quantity doubled (and its amount with it): a correction to import."""
    names = header.lstrip("\ufeff").rstrip("\r\n").split(",")
    values = row.rstrip("\r\n").split(",")
    quantity, amount = names.index("quantity"), names.index("amount")
    values[quantity] = str(int(values[quantity]) * 2)
    values[amount] = str(2 * Decimal(values[amount]))
    return ",".join(values) + row[len(row.rstrip("\r\n")) :]


def clean_environment() -> dict[str, str]:
    """The test's environment without what would point the CLI elsewhere (real endpoints, keys, a mapping)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SORACOM_", "APS_", "SORACHARGE_", "AWS_", "PYTEST_", "COV_"))
    }


@dataclass
class Reader:
    """One reader's terminal: a bash session in a scratch folder, its variables kept from one command to the next."""

    folder: Path
    environment: dict[str, str]
    state: Path
    simulators: subprocess.Popen[str] | None = None

    PRELUDE = (
        # `make` is the repository's Makefile; its installs are not remade (this suite's .venv is the install).
        'make() { command make --no-print-directory -f "$SORACHARGE_REPO/Makefile" '
        '-o .venv/.demo-installed -o .venv/.installed "$@"; }\n'
    )

    def script(self, text: str) -> str:
        # set -a: every variable the docs set is exported, so export -p saves it for the next command.
        saved = f'export -p > "{self.state}"'
        return f'set -a\nsource "{self.state}"\n{self.PRELUDE}{text}\nstatus=$?\n{saved}\nexit $status\n'

    def run(self, text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            ["/bin/bash", "-c", self.script(text)],
            cwd=self.folder,
            env=self.environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=STEP_TIMEOUT,
        )

    def interrupt_when_serving(self, text: str) -> tuple[int, str]:
        """Run a command that serves until Ctrl-C: once it says where the CloudBlue simulator is, Ctrl-C."""
        process = self.serve(self.script(text))
        output = wait_until_serving(process)
        rest = interrupt(process)
        # Ctrl-C ends it: 0, or the shell's 130 for a program interrupted by SIGINT, both a clean stop.
        return (0 if process.returncode in {0, 130} else process.returncode), output + rest

    def serve(self, script: str) -> subprocess.Popen[str]:
        return subprocess.Popen(  # noqa: S603
            ["/bin/bash", "-c", script],
            cwd=self.folder,
            env=self.environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def start_simulators(self) -> None:
        """The simulators the page has running "in another terminal"."""
        if self.simulators is None:
            self.simulators = self.serve(f"exec {VENV_BIN / 'soracharge'} simulate")
            wait_until_serving(self.simulators)

    def close(self) -> None:
        if self.simulators is not None:
            interrupt(self.simulators)


def interrupt(process: subprocess.Popen[str]) -> str:
    """Ctrl-C to the process's group, and the rest of its output."""
    os.killpg(process.pid, signal.SIGINT)
    return rest_after_ctrl_c(process)


def wait_until_serving(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    output = ""
    for line in process.stdout:  # the simulators print where each serves, CloudBlue's last
        output += line
        if line.startswith("CloudBlue simulator on "):
            return output
    process.wait(timeout=30)
    pytest.fail(f"the simulators stopped before serving (status {process.returncode}):\n{output}")


@pytest.fixture
def reader(tmp_path: Path, reader_files: Path) -> Iterator[Reader]:
    folder = tmp_path / "reader"
    shutil.copytree(reader_files, folder, ignore=shutil.ignore_patterns("out"))
    for name in ("examples", "events", "bench"):
        (folder / name).symlink_to(REPO / name)
    (folder / ".venv/bin").mkdir(parents=True)
    for name in ("soracharge", "python"):  # a wrapper each: the real venv's, found from its own path
        wrapper = folder / ".venv/bin" / name
        wrapper.write_text(f'#!/bin/sh\nexec "{VENV_BIN / name}" "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
    state = tmp_path / "variables.sh"
    state.write_text("", encoding="utf-8")
    environment = {
        **clean_environment(),
        "PATH": f"{folder / '.venv/bin'}:{os.environ['PATH']}",
        "SORACHARGE_LOCAL_INSTANT_WAITS": "1",
        "SORACHARGE_REPO": str(REPO),
    }
    terminal = Reader(folder, environment, state)
    yield terminal
    terminal.close()


def quoted_lines_missing(quote: tuple[str, ...], output: str) -> str | None:
    """None when every quoted line is in the output in order, else what is missing and where.

    A line ``...`` stands for lines left out; a line ending with ``...`` for the rest of a line cut short."""
    actual = [masked(line) for line in output.splitlines()]
    position = 0
    for line in quote:
        if line.strip() in {"", "...", "…"}:
            continue
        wanted = masked(line)
        cut = wanted.removesuffix("...").removesuffix("…") if wanted.endswith(("...", "…")) else None
        try:
            position = (
                next(
                    index
                    for index in range(position, len(actual))
                    if actual[index] == wanted or (cut is not None and actual[index].startswith(cut))
                )
                + 1
            )
        except StopIteration:
            nearby = "\n".join(actual[max(0, position - 2) : position + 8])
            return f"the quoted line\n{line}\n(masked: {wanted!r}) is not in the output; from there it is:\n{nearby}"
    return None


@pytest.mark.parametrize("page", PAGES_RUN, ids=[str(page.relative_to(REPO)) for page in PAGES_RUN])
def test_every_command_of_the_page_runs_as_shown(page: Path, reader: Reader) -> None:
    for name, content in titled_files(page).items():
        (reader.folder / name).write_text(content, encoding="utf-8")
    for step in steps(page):
        if step.not_here:
            continue
        if SIMULATE.search(step.script):  # the page's own simulators, not ones beside it
            status, output = reader.interrupt_when_serving(step.script)
        else:
            if SIMULATORS_PORT in step.script:
                reader.start_simulators()
            done = reader.run(step.script)
            status, output = done.returncode, done.stdout
        assert status == step.status, (
            f"{step.command}\n  exits {status}, the docs say {step.status}; its output:\n{output[-3000:]}"
        )
        assert "Traceback (most recent call last)" not in output, f"{step.command}\n  a traceback:\n{output[-3000:]}"
        if step.command.output is not None:
            missing = quoted_lines_missing(step.command.output, output)
            assert missing is None, f"{step.command}\n  the docs quote output it does not print: {missing}"


def test_the_harness_runs_the_pages_a_reader_follows() -> None:
    # A harness that finds nothing checks nothing: the pages of commands are run, and quotes are compared.
    run = {str(page.relative_to(REPO)) for page in PAGES_RUN}
    assert run >= {
        "README.md",
        "docs/local/index.md",
        "docs/local/cli.md",
        "docs/local/simulators.md",
        "docs/mapping/index.md",
        "docs/mapping/worked-example.md",
        "docs/how-it-works/operators.md",
        "docs/operate/corrections.md",
    }
    quoted = [step for page in PAGES_RUN for step in steps(page) if step.command.output]
    assert len(quoted) >= 8, [str(step.command) for step in quoted]
    assert all(step.not_here is None for step in quoted), "a quoted output of a command not run here"


def test_every_line_not_run_here_says_why() -> None:
    skipped = [step for page in PAGES for step in steps(page) if step.not_here]
    assert skipped  # the AWS commands of the deployment pages
    for step in skipped:
        assert step.script == ": not here", step
        assert any(pattern.search(line) for pattern, _ in NOT_HERE for line in step.text.splitlines()), step
