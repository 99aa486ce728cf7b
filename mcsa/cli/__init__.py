"""The ``mcsa`` command: replay traces, inspect masks, plan heaps, verify vectors."""

from __future__ import annotations

import click

from .inspect import attention, mask, targets, verify
from .plan import fit, plan
from .replay import replay


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcsa")
def main():
    """Bit-exact simulator of mincut-aware sparse attention on Rust targets.

    \b
    Example:
      mcsa replay examples/trace.jsonl --target stm32f411 --seq-len 128 --dim 32
      mcsa fit --target stm32f411 --seq-len 256 --partitions 4 --dim 32
    """


for command in (replay, mask, plan, fit, targets, verify, attention):
    main.add_command(command)
