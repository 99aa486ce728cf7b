"""The docs restate the code only through generated blocks, and those are current.

``tools/docs.py --check`` renders every ``<!-- generated: NAME -->`` block of README.md
and docs/*.md from the code (presets, NaN rules, profiles, ``--help`` texts) and
fails on any that differs; the links between the pages resolve.
"""

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = runpy.run_path(str(ROOT / "tools" / "docs.py"), run_name="docs")


def test_generated_blocks_are_current(capsys):
    assert DOCS["main"](["--check"]) == 0, capsys.readouterr().out


def test_the_readme_is_a_short_entry_point():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 150
    commands = [line for line in lines if line.startswith("python3 -m venv .venv")]
    assert commands[:2] == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && mcsa replay examples/trace.jsonl "
        "--target stm32f411 --seq-len 128 --dim 32",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest",
    ]


def test_every_relative_link_resolves():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_a_stale_block_is_named(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("<!-- generated: presets -->\nold\n<!-- end generated -->\n")
    monkeypatch.setitem(DOCS["main"].__globals__, "FILES", [page])
    monkeypatch.setitem(DOCS["main"].__globals__, "ROOT", tmp_path)
    assert DOCS["main"](["--check"]) == 1
    assert page.read_text().endswith("old\n<!-- end generated -->\n")
    assert DOCS["main"]([]) == 0
    assert "| `thumbv7em-release` | 32 | wrap |" in page.read_text()
