"""Hostile inputs found by the issue-7 audit and the fuzz beyond it: each gets a
refusal with exit 2 naming its place, or a verdict, never a crash or a traceback."""

import json
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
    """The refusal counts the mask that would be built (every u16 pair: 2^32), not the
    insertions of the reference's loops, and points at --stats."""
    result = run_process("mask", "--lambda", 200, "--partitions", partitions, "--seq-len", seq_len)
    assert result.returncode == 2, result.stderr
    assert f"build_mask(seq_len={seq_len}) would hold 4,294,967,296 positions" in result.stderr
    assert "run `mcsa mask --stats`" in result.stderr and "Traceback" not in result.stderr
    stats = run_process("mask", "--lambda", 200, "--partitions", partitions, "--seq-len", seq_len, "--stats")
    assert stats.returncode == 0 and "4,294,967,296 positions" in stats.stdout, stats.stderr


def test_fit_whose_count_wraps_is_a_verdict():
    result = run("fit", "--target", "x86_64", "--seq-len", 1 << 32, "--partitions", 4, "--dim", 32)
    assert result.exit_code == 1 and "q, k and v alone exceed it" in " ".join(result.stdout.split()), result.output


TRACE_ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32", "--format", "jsonl"]
PACKET = b'{"lambda":200,"lambda_prev":200,"boundary_edges":0,"boundary_concentration_q15":0,"partition_count":2,"flags":0}'
HEADER = b"lambda,lambda_prev,boundary_edges,boundary_concentration_q15,partition_count,flags"


@pytest.mark.parametrize("name, text", [
    ("t.jsonl", PACKET + b"\n" + PACKET + b"\n"),
    ("t.csv", HEADER + b"\n1,1,0,0,2,0\n1,1,0,0,2,0\n"),
])
def test_windows_saved_traces_are_read_like_the_others(tmp_path, name, text):
    """A byte order mark and CRLF line ends (Notepad's UTF-8) change nothing, in every text format."""
    plain = tmp_path / name
    plain.write_bytes(text)
    expected = run("replay", plain, *TRACE_ARGS)
    assert expected.exit_code == 0, expected.output
    windows = tmp_path / ("win." + name)
    windows.write_bytes(b"\xef\xbb\xbf" + text.replace(b"\n", b"\r\n"))
    result = run("replay", windows, *TRACE_ARGS)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == expected.stdout.splitlines()[1:]
    piped = run_process("replay", "-", *TRACE_ARGS, stdin=windows.read_bytes().decode("utf-8"))
    assert piped.returncode == 0 and piped.stdout.splitlines()[1:] == expected.stdout.splitlines()[1:], piped.stderr


def test_a_bom_inside_a_trace_is_still_refused_with_its_line(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_bytes(PACKET + b"\n\xef\xbb\xbf" + PACKET + b"\n")
    result = run("replay", trace, *TRACE_ARGS)
    assert result.exit_code == 2 and f"{trace}:2: not JSON" in result.output


def test_a_failed_replay_leaves_no_summary_nor_plot(tmp_path):
    trace = tmp_path / "t.bin"
    trace.write_bytes(b"\x01" * 15)
    out = tmp_path / "out"
    out.mkdir()
    result = run("replay", trace, *TRACE_ARGS, "-o", out / "r.jsonl", "--summary", out / "s.jsonl",
                 "--plot", out / "p.png")
    assert result.exit_code == 2 and f"{trace}: byte 0: incomplete record" in result.output
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["mask", "--lambda", 100, "--partitions", 3, "--seq-len", 48, "--png"],
    ["replay", __file__.replace("test_hardening.py", "../examples/trace.jsonl"), *TRACE_ARGS, "-o"],
])
def test_a_full_device_is_named(command):
    if not os.path.exists("/dev/full"):
        pytest.fail("this test needs Linux's /dev/full")
    result = run(*command, "/dev/full")
    assert result.exit_code == 2 and "Error: /dev/full: No space left on device" in result.output


def test_attention_names_every_array_when_sizes_differ(tmp_path):
    """An empty q used to be reported as a fault of k."""
    import numpy as np

    np.save(tmp_path / "q.npy", np.zeros(0, np.int8))
    np.save(tmp_path / "k.npy", np.ones(64, np.int8))
    result = run("attention", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "k.npy",
                 "--dim", 8, "--scale", 0.25)
    assert result.exit_code == 2
    assert f"--q {tmp_path / 'q.npy'} has 0, --k {tmp_path / 'k.npy'} has 64, --v" in result.output


@pytest.mark.parametrize("args, message", [
    (["fit", "--seq-len", 1 << 32, "--partitions", 2], "--seq-len 4,294,967,296 is over 4,294,967,295, the largest usize"),
    (["fit", "--seq-len", 64, "--partitions", 2, "--dim", 1 << 32], "--dim 4,294,967,296 is over"),
    (["fit", "--seq-len", 64, "--partitions", 2, "--heap-budget", 1 << 32],
     "--heap-budget must be in 0..=4294967295 (a heap on a 32-bit target), got 4294967296"),
    (["plan", "--partitions", "2..3", "--max-seq-len", 1 << 32], "--max-seq-len 4,294,967,296 is over"),
    (["replay", __file__.replace("test_hardening.py", "../examples/trace.jsonl"), "--seq-len", 1 << 32],
     "--seq-len 4,294,967,296 is over"),
])
def test_a_size_the_target_cannot_hold_names_its_option(args, message):
    """Not the library's argument name (``hi``, ``heap_budget``)."""
    result = run(*args, "--target", "stm32f411")
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_line_without_end_is_refused_not_read_into_memory(fmt, tmp_path):
    """``/dev/zero`` as a text trace is refused by what its content is; an endless line of text is refused at its line."""
    result = run("replay", "/dev/zero", "--input-format", fmt, *TRACE_ARGS)
    assert result.exit_code == 2 and "/dev/zero: --input-format" in result.output and "binary packets" in result.output
    endless = tmp_path / f"endless.{fmt}"
    endless.write_bytes((b"{\"lambda\": 1" if fmt == "jsonl" else b"lambda,") * (1 << 18))
    result = run("replay", endless, "--input-format", fmt, *TRACE_ARGS)
    assert result.exit_code == 2 and f"{endless}:1: a line longer than 1,048,576" in result.output


def test_an_over_long_line_is_named_after_good_ones(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_bytes(PACKET + b"\n" + PACKET + b"\n" + b" " * (1 << 21) + b"\n")
    result = run("replay", trace, *TRACE_ARGS)
    assert result.exit_code == 2 and f"{trace}:3: a line longer than" in result.output


def test_the_readmes_attention_example_runs():
    """It used q, k and v without defining them."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```python\nimport numpy as np, mcsa\n") + len("```python\n")
    namespace: dict = {}
    exec(readme[start: readme.index("```", start)], namespace)
    assert namespace["out"].dtype == "float32" and namespace["out"].shape == (128 * 32,)


def test_a_malformed_scheduler_address_names_the_option():
    trace = __file__.replace("test_hardening.py", "../examples/trace.jsonl")
    result = run("replay", trace, *TRACE_ARGS, "--scheduler", "garbage")
    assert result.exit_code == 2 and "--scheduler garbage: " in result.output, result.output


def test_an_empty_output_path_is_refused_as_such():
    trace = __file__.replace("test_hardening.py", "../examples/trace.jsonl")
    result = run("replay", trace, *TRACE_ARGS, "-o", "")
    assert result.exit_code == 2 and "Error: -o: an empty path names no file" in result.output, result.output
    folder = run("replay", trace, trace, "--target", "stm32f411", "--seq-len", 128, "--format", "parquet", "-o", "")
    assert folder.exit_code == 2 and "Error: -o: an empty path names no file" in folder.output, folder.output


def _windows(text: str) -> bytes:
    return b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()


PROFILE = """[x]
description = "d"
source = "s"
arch = "thumbv7em"
usize_bits = 32
ram = 131072
heap_budget = 65536
fpu = "single"
expf = "libm-rs"
allocator = "linked-list"
"""


@pytest.mark.parametrize("name, text", [("c.json", '{"min_density_q15": 100}\n'), ("c.toml", "min_density_q15 = 100\n")])
def test_windows_saved_configs_are_read(tmp_path, name, text):
    config = tmp_path / name
    config.write_bytes(_windows(text))
    plain = tmp_path / ("plain." + name)
    plain.write_text(text)
    args = ["mask", "--lambda", 100, "--partitions", 3, "--seq-len", 48, "--config"]
    result = run(*args, config)
    assert result.exit_code == 0 and result.output == run(*args, plain).output, result.output


def test_windows_saved_profiles_and_vectors_are_read(tmp_path):
    import gzip
    from pathlib import Path

    profiles = tmp_path / "p.toml"
    profiles.write_bytes(_windows(PROFILE))
    result = run("targets", "--profiles", profiles)
    assert result.exit_code == 0 and any(line.startswith("x ") for line in result.stdout.splitlines())
    golden = Path(__file__).parent / "golden" / "density.jsonl.gz"
    first = gzip.decompress(golden.read_bytes()).decode().splitlines(keepends=True)[:2]
    vectors = tmp_path / "density.jsonl"
    vectors.write_bytes(_windows("".join(first)))
    result = run("verify", vectors, "--build", "x86_64-release")
    assert result.exit_code == 0 and "2 density cases, 0 mismatches" in result.output, result.output


def test_an_interrupt_inside_a_jitted_kernel_is_exit_130(monkeypatch):
    """Ctrl-C while a kernel calls back into Python (plan's B-tree replay) reaches
    the CLI as a SystemError caused by the KeyboardInterrupt: it is an interruption
    (130), not a bug (70)."""
    import firmware_model.profiles as profiles

    def interrupted(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as cause:
            raise SystemError("CPUDispatcher(<function _btree>) returned a result with an exception set") from cause

    monkeypatch.setattr(profiles, "load_profiles", interrupted)
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 130 and "internal error" not in result.output


def test_a_step_that_panics_after_its_mask_is_a_panic_in_the_record():
    # dim 0: the mask builds, then sparse_attention divides by zero; --fail-on panic must see it
    result = run("replay", "examples/trace.jsonl", "--target", "stm32f411", "--seq-len", 128, "--dim", 0,
                 "--fail-on", "panic")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    records = [r for r in lines if "index" in r]
    assert result.exit_code == 1 and len(records) == 400
    assert all(r["panic"] == "attempt to divide by zero" and r["fits"] is False and r["num_positions"] for r in records)
    assert lines[-1]["summary"]["panics"] == 400 and lines[-1]["summary"]["worst_step_peak_bytes"] is None


def test_replayer_refuses_a_heap_budget_beyond_the_targets_isize():
    from firmware_model.profiles import profile_named
    from mcsa.core.packets import SparsityConfig
    from mcsa.app.replay import Replayer

    with pytest.raises(ValueError, match="heap_budget"):
        Replayer(profile_named("stm32f411"), "release", SparsityConfig(), 128, 32, heap_budget=2**40)


def _second_audit_case(tmp_path, case):
    """The arguments of one hostile input found by the second audit."""
    import numpy as np

    mask = ["mask", "--lambda", 100, "--partitions", 3, "--seq-len", 48]
    if case == "negative-bit-pattern":
        path = tmp_path / "neg.json"
        path.write_text('{"lambda_based_density": {"Linear": {"min_density": "-0000001", "max_density": 0.5}}}')
        return [*mask, "--config", path]
    if case == "deep-toml":
        path = tmp_path / "deep.toml"
        path.write_text("a = " + "[" * 500 + "]" * 500 + "\n")
        return [*mask, "--config", path]
    if case in ("npy-shape", "npy-bytes"):
        good = tmp_path / "k.npy"
        np.save(good, np.zeros(32, np.int8))
        bad = tmp_path / "q.npy"
        if case == "npy-shape":
            header = b"{'descr': '|i1', 'fortran_order': False, 'shape': (0, 18446744073709551617), }"
            bad.write_bytes(b"\x93NUMPY\x01\x00" + len(header + b"\n").to_bytes(2, "little") + header + b"\n")
        else:
            bad.write_bytes(bytes(range(256)) * 4)
        return ["attention", "--q", bad, "--k", good, "--v", good, "--dim", 4, "--scale", 0.5]
    if case == "empty-result":
        path = tmp_path / "density.jsonl"
        path.write_text(json.dumps({"gate": {"lambda": 1, "lambda_prev": 1, "boundary_edges": 0,
                                             "boundary_concentration_q15": 0, "partition_count": 2, "flags": 0},
                                    "results": {"x86_64-release": {}}}) + "\n")
        return ["verify", path, "--build", "x86_64-release"]
    if case == "png-folder":
        return [*mask, "--png", f"{tmp_path / 'sub'}/"]
    if case == "png-empty":
        return [*mask, "--png", ""]
    return [*mask[:-1], {"fullwidth": "５", "arabic": "٨", "underscore": "1_6"}[case]]


@pytest.mark.parametrize("case, message", [
    ("negative-bit-pattern", "bit pattern must be 8 hex digits, got '-0000001'"),
    ("deep-toml", "not valid TOML (arrays or tables nested too deep)"),
    ("npy-shape", "--q"),  # a header shape beyond 64 bits
    ("npy-bytes", "cannot read as .npy (not an array file)"),
    ("empty-result", "the result for build 'x86_64-release' is empty: nothing to compare"),
    ("png-folder", "names a folder, not a file"),
    ("png-empty", "--png: an empty path names no file"),
    ("fullwidth", "is not an integer (ASCII digits)"),
    ("arabic", "is not an integer (ASCII digits)"),
    ("underscore", "is not an integer (ASCII digits)"),
])
def test_second_audit_inputs_are_refused_naming_them(tmp_path, case, message):
    result = run(*_second_audit_case(tmp_path, case))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "sub").exists()


def test_a_heap_budget_above_the_parts_ram_is_said_to_be_a_what_if():
    result = run("fit", "--target", "stm32f411", "--seq-len", 256, "--partitions", 4, "--dim", 32,
                 "--heap-budget", 2_000_000_000)
    assert result.exit_code == 0 and "more than stm32f411's 131,072 B of RAM: a what-if" in result.stderr


def test_running_out_of_host_memory_is_said_not_called_a_bug(monkeypatch):
    import mcsa.app.mask_report as mask_report

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 18.6 GiB")

    monkeypatch.setattr(mask_report, "report_mask", exhausted)
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 48)
    assert result.exit_code == 2 and "not enough memory on this machine" in result.output, result.output


def test_a_heap_map_that_cannot_be_drawn_says_why(monkeypatch):
    from firmware_model import step

    args = ["fit", "--target", "stm32f411", "--seq-len", 64, "--partitions", 2, "--dim", 1, "--map"]
    none = run(*args, "--allocator", "none")
    assert none.exit_code == 2 and "(allocator none places no blocks)" in none.output, none.output
    monkeypatch.setattr(step, "TRACE_LIMIT", 10)
    long = run(*args)
    assert long.exit_code == 2 and "(its allocator trace is over 10 events)" in long.output, long.output
