"""Hostile inputs found by the issue-7 audit and the fuzz beyond it: each gets a
refusal with exit 2 naming its place, or a verdict, never a crash or a traceback."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mcsa.cli import main

HUGE = 433305435341373281
"""A seq_len whose insertion count wraps 64 bits back into range (the segfault of issue 7)."""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def run_process(*args, stdin=None):
    """In a child process: a crash there cannot take the test run with it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", "from mcsa.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, env=env, input=stdin, timeout=300)


@pytest.mark.parametrize("seq_len, partitions", [(HUGE, 2), (1 << 32, 4)])
def test_mask_whose_count_wraps_is_refused_not_crashed(seq_len, partitions):
    result = run_process("mask", "--lambda", 200, "--partitions", partitions, "--seq-len", seq_len)
    assert result.returncode == 2, result.stderr
    assert f"build_mask(seq_len={seq_len}) with wrapping indices would hold" in result.stderr
    assert "Traceback" not in result.stderr


def test_fit_whose_count_wraps_is_a_verdict():
    result = run("fit", "--target", "x86_64", "--seq-len", 1 << 32, "--partitions", 4, "--dim", 32)
    assert result.exit_code == 1 and "q, k and v alone exceed it" in result.stdout, result.output
