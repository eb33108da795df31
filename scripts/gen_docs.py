"""Regenerate the reference parts of docs/cli.md and docs/settings.md from the code.

python scripts/gen_docs.py          # rewrite the files
python scripts/gen_docs.py --check  # exit 1 if they are stale (tests/test_docs.py does this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from modelport.cli.main import main
from modelport.settings import markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"
MARK = "<!-- generated below by scripts/gen_docs.py: do not edit by hand -->\n"


def commands(group: click.Group, path: list[str]) -> list[list[str]]:
    out = []
    for name in sorted(group.commands):
        cmd = group.commands[name]
        out.append([*path, name])
        if isinstance(cmd, click.Group):
            out += commands(cmd, [*path, name])
    return out


def cli_reference() -> str:
    runner = CliRunner()
    parts = []
    for cmd in commands(main, []):
        result = runner.invoke(main, [*cmd, "--help"], prog_name="modelport", terminal_width=100)
        if result.exit_code != 0:
            raise SystemExit(f"modelport {' '.join(cmd)} --help failed: {result.output}")
        parts.append(f"## modelport {' '.join(cmd)}\n\n```\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


def render(path: Path, generated: str) -> tuple[str, str]:
    text = path.read_text()
    head = text.split(MARK)[0]
    return text, head + MARK + "\n" + generated


def main_(argv: list[str]) -> int:
    stale = []
    for path, generated in ((DOCS / "cli.md", cli_reference()), (DOCS / "settings.md", markdown())):
        current, wanted = render(path, generated)
        if current != wanted:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(wanted)
    if stale and "--check" in argv:
        print(f"stale: {', '.join(stale)} (run python scripts/gen_docs.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main_(sys.argv[1:]))
