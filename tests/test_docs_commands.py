"""Every ``zoo`` command that README.md, docs/*.md and ``zoo --help`` show parses as written: its subcommands
exist, its options exist where they are placed, and its values are valid (choices, numbers). A renamed option or
a documented one the CLI never had (``--format timm``, ``zoo --registry URL ...``) fails here. Running them needs
the sources they name; the first-hour tests run the ones the bundled registry allows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from zoo.cli import cli

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(?:console|bash|sh|shell)\n(.*?)```", re.S)
COMMAND = re.compile(r"^(?:\$ )?(?:\S*/)?zoo\s+(.*)$")


def documented() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in BLOCK.findall(path.read_text()):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():  # continued lines as one
                for part in line.strip().split(" && "):
                    match = COMMAND.match(part.strip())
                    if match:
                        found.append((str(path.relative_to(ROOT)), match.group(1)))
    for line in (cli.help or "").splitlines():
        match = COMMAND.match(line.strip())
        if match:
            found.append(("zoo --help", match.group(1)))
    return found


def parse(words: list[str]) -> click.Command:
    """Parse as the CLI does, down to the leaf command, without running anything."""
    ctx = cli.make_context("zoo", list(words))
    command: click.Command = cli
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return command


COMMANDS = documented()


def test_the_docs_show_commands():
    places = {where for where, _ in COMMANDS}
    assert {"README.md", "zoo --help", "docs/vision.md"} <= places and len(COMMANDS) > 30


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_documented_command_parses(where, line):
    try:
        parse(shlex.split(line, comments=True))
    except click.ClickException as exc:
        pytest.fail(f"{where}: `zoo {line}`: {exc.format_message()}")
