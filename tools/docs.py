"""The tables of README.md and docs/ that restate the code, generated from it.

A generated block sits between ``<!-- generated: NAME -->`` and
``<!-- end generated -->``; this script rewrites every such block from the code
(``--check``: exit 1 and name the stale blocks instead). ``tests/test_docs.py``
runs the check, so the docs cannot drift from the presets, NaN rules, profiles
and ``--help`` texts they show.

Usage: ``python tools/docs.py`` (rewrite) or ``python tools/docs.py --check``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w:-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def _markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def presets() -> str:
    """Every simulator preset: usize, overflow, expf, NaN rules and how it is known."""
    from mcsa.core.target import HOW_KNOWN, PRESETS

    return _markdown(("preset", "usize", "overflow", "`f32::exp`", "NaN rules", "how known"),
                     [(f"`{t.name}`", t.usize_bits, t.overflow.value, f"`{t.expf.value}`", f"`{t.nan.name}`",
                       HOW_KNOWN[t.name]) for t in PRESETS.values()])


def nan_rules() -> str:
    """Every NaN rule set, the presets that use it and where it comes from."""
    from mcsa.core.target import NAN_RULES, PRESETS

    rows = []
    for rules in NAN_RULES.values():
        users = sorted({name.rsplit("-", 1)[0] for name, t in PRESETS.items() if t.nan is rules})
        rows.append((f"`{rules.name}`", ", ".join(f"`{u}-*`" for u in users) or "none (pass it as `Target(nan=...)`)",
                     rules.source))
    return _markdown(("rules", "presets", "how known"), rows)


def profiles() -> str:
    """The built-in target profiles."""
    from firmware_model.profiles import load_profiles

    return _markdown(("profile", "arch", "usize", "RAM", "default heap", "allocator", "`f32::exp`", "NaN rules",
                      "part"),
                     [(f"`{p.name}`", p.arch, p.usize_bits, f"{p.ram:,} B", f"{p.heap_budget:,} B",
                       f"`{p.allocator.name}`", f"`{p.expf}`", f"`{p.nan}`", p.description)
                      for p in load_profiles().values()])


def cli_help(command: str) -> str:
    """``mcsa COMMAND --help`` (``mcsa --help`` for ``main``), as the terminal shows it at 100 columns."""
    from mcsa.cli import main

    args = [] if command == "main" else command.split("-")
    result = CliRunner().invoke(main, [*args, "--help"], terminal_width=100, prog_name="mcsa")
    if result.exit_code != 0:
        raise SystemExit(f"mcsa {' '.join(args)} --help failed: {result.output}")
    return "```\n" + result.output.rstrip() + "\n```\n"


def render(name: str) -> str:
    """The body of the block ``name``: a function of this module, ``help:COMMAND`` for a help text."""
    if name.startswith("help:"):
        return cli_help(name.removeprefix("help:"))
    generators = {"presets": presets, "nan-rules": nan_rules, "profiles": profiles}
    if name not in generators:
        raise SystemExit(f"unknown generated block {name!r}; known: {', '.join(generators)}, help:COMMAND")
    return generators[name]()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated block is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in FILES:
        text = path.read_text()
        new = BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)
        if new != text:
            stale += [f"{path.relative_to(ROOT)}: {m.group('name')}" for m in BLOCK.finditer(text)
                      if m.group("body") != render(m.group("name"))]
            if not args.check:
                path.write_text(new)
    if stale:
        print(("stale: " if args.check else "rewrote: ") + "; ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
