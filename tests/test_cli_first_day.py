"""Issue 16 and 18.4 on the command line: one set of options declared once, target
names and profiles as users write them, what the API alone offered, readable
answers, and a first day's mistakes answered with a refusal or a fast answer."""

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import mcsa
from firmware_model.profiles import build_named, load_profiles
from firmware_model.step import op_counts, representations
from mcsa.cli import COMMANDS, main
from mcsa.cli.common import (
    ByteSize, PartitionList, TABLE_WIDTH, gate_options, heap_budget_option,
)

from .conftest import GOLDEN, on_terminal
from .test_cli_surface import _qkv

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
MINE = ("mask", "attention", "verify", "targets", "example")
"""The commands whose options and help this branch owns."""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def refused(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


def mcsa_process(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", "from mcsa.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


# --- the shared option types ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,counts", [
    ("2,4,8", (2, 4, 8)), ("2..5", (2, 3, 4, 5)), ("2,4..6,16", (2, 4, 5, 6, 16)), ("8,2,2", (2, 8)),
    ("0..1", (0, 1)), ("65535", (65535,)), (" 3 , 5 ", (3, 5)),
])
def test_partition_lists_take_one_syntax(text, counts):
    assert PartitionList().convert(text, None, None) == counts


@pytest.mark.parametrize("text,message", [
    ("9..2", "9..2 runs downwards; write 2..9"), ("2..x", "write counts as 2,4,8 or 2..16 or 2,4..8,16"),
    ("70000", "70000: a partition count is a u16"), ("", "write counts as"), ("2,,4", "write counts as"),
    ("1_0", "write counts as"),
])
def test_partition_lists_refuse_with_the_syntax(text, message):
    with pytest.raises(click.BadParameter, match=re.escape(message)):
        PartitionList().convert(text, None, None)


@pytest.mark.parametrize("text,size", [
    ("65536", 65536), ("64K", 65536), ("64KiB", 65536), ("64k", 65536), ("64 KiB", 65536), ("1M", 1 << 20),
    ("1MiB", 1 << 20), ("2G", 2 << 30), ("7B", 7), ("0", 0),
])
def test_byte_sizes_take_binary_suffixes(text, size):
    assert ByteSize().convert(text, None, None) == size


@pytest.mark.parametrize("text,message", [
    ("64KB", "write 64K or 64KiB (1024-based) or the bytes; KB is ambiguous"), ("1.5M", "is not a size in bytes"),
    ("-1", "is not a size in bytes"), ("64Q", "is not a size in bytes"), (str(2**64) + "K", "the largest usize"),
])
def test_byte_sizes_refuse_what_is_ambiguous_or_not_a_size(text, message):
    with pytest.raises(click.BadParameter, match=re.escape(message)):
        ByteSize().convert(text, None, None)


def test_heap_budget_option_reads_byte_sizes():
    @click.command()
    @heap_budget_option
    def command(heap_budget):
        click.echo(heap_budget)

    assert CliRunner().invoke(command, ["--heap-budget", "64K"]).output == "65536\n"
    assert CliRunner().invoke(command, ["--heap-budget", "64KB"]).exit_code == 2


def test_gate_bundle_defaults_json_and_overrides():
    @click.command()
    @gate_options(partition_list=(2, 4, 8), **{"lambda": 200})
    def listed(gate, partitions):
        click.echo(json.dumps([gate.to_dict(), list(partitions)]))

    def gate_of(*args):
        result = CliRunner().invoke(listed, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert gate_of() == [{"lambda": 200, "lambda_prev": 0, "boundary_edges": 0, "boundary_concentration_q15": 0,
                          "partition_count": 0, "flags": 0}, [2, 4, 8]]
    recorded = '{"lambda": 122, "lambda_prev": 120, "boundary_edges": 2, "partition_count": 4, "t": 0.5}'
    gate, counts = gate_of("--gate", recorded, "--flags", "1")
    assert (gate["lambda"], gate["lambda_prev"], gate["flags"], gate["partition_count"], counts) == (122, 120, 1, 4,
                                                                                                      [4])
    gate, counts = gate_of("--gate", recorded, "--partitions", "2..4", "--lambda", "7")
    assert gate["lambda"] == 7 and counts == [2, 3, 4]


# --- the gate in every command that takes one: a recorded packet reproduced -------------------------------


def test_a_recorded_packet_is_reproduced_by_mask_as_replay_records_it():
    record = (EXAMPLES / "trace.jsonl").read_text().splitlines()[2]
    replayed = json.loads(run("replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128,
                              "--format", "jsonl").stdout.splitlines()[3])
    by_json = json.loads(run("mask", "--seq-len", 128, "--target", "stm32f411", "--gate", record, "--json").stdout)
    packet = json.loads(record)
    by_options = json.loads(run("mask", "--seq-len", 128, "--target", "stm32f411", "--lambda", packet["lambda"],
                                "--lambda-prev", packet["lambda_prev"], "--boundary-edges", packet["boundary_edges"],
                                "--concentration", packet["boundary_concentration_q15"],
                                "--partitions", packet["partition_count"], "--flags", packet["flags"],
                                "--json").stdout)
    assert by_json == by_options
    for key in ("num_positions", "density", "target_density", "flops_ratio"):
        assert by_json[key] == replayed[key], key


def test_attention_takes_the_same_gate_options(tmp_path):
    qkv = _qkv(tmp_path, 32, 4)
    by_json = run("attention", *qkv, "--dim", 4, "--scale", 0.5, "--gate", '{"lambda": 200, "partition_count": 2}')
    by_options = run("attention", *qkv, "--dim", 4, "--scale", 0.5, "--lambda", 200, "--lambda-prev", 100,
                     "--partitions", 2)
    assert by_json.exit_code == 0 and json.loads(by_json.stdout) == json.loads(by_options.stdout)


def test_dim_has_one_range_and_zero_is_the_builds_panic(tmp_path):
    result = run("attention", *_qkv(tmp_path, 32, 4), "--dim", 0, "--scale", 0.5)
    assert result.exit_code == 1 and "sparse_attention panics: attempt to divide by zero" in result.output
    mask = json.loads(run("mask", "--seq-len", 48, "--lambda", 100, "--partitions", 3, "--dim", 0, "--json").stdout)
    assert mask["op_counts"]["i8_macs"] == 0
    refused(run("mask", "--seq-len", 48, "--dim", 2**32, "--target", "thumbv7em"),
            "--dim 4,294,967,296 is over 4,294,967,295, the largest usize on thumbv7em-release")
    refused(run("mask", "--seq-len", 48, "--dim", -1), "--dim")


# --- target names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,build", [("STM32F411", "stm32f411-release"), ("stm32f411_debug", "stm32f411-debug"),
                                        ("thumbv7em", "thumbv7em-release"), ("esp32-s3", "esp32s3-release"),
                                        ("X86_64-Debug", "x86_64-debug")])
def test_target_names_as_users_write_them(name, build):
    result = run("mask", "--seq-len", 24, "--lambda", 100, "--partitions", 3, "--target", name)
    assert result.exit_code == 0 and result.output.startswith(f"{build}: seq_len 24"), result.output


@pytest.mark.parametrize("command", [["mask", "--seq-len", 24], ["fit", "--seq-len", 64, "--partitions", 2],
                                     ["verify", GOLDEN / "density.jsonl.gz"]])
def test_an_unknown_target_names_the_option_and_a_few_close_names(command):
    message = refused(run(*command, "--target", "stm32f412"),
                      "--target: unknown target 'stm32f412'; did you mean stm32f411, stm32f103 or stm32h743?")
    assert len(message) < 200


def test_a_plan_on_a_terminal_shows_each_row_when_done_and_no_bar_among_them():
    """Rows come as each partition count is done, the bar's line erased first; piped,
    the whole table comes at the end and no bar reaches it."""
    args = ["plan", "--target", "esp32s3", "--heap-budget", "1M", "--dim", "32", "--partitions", "2,4"]
    said, (done,) = on_terminal(args, stdout_too=True)
    assert done.returncode == 0
    drawn = [re.sub(rb"\x1b\[[?0-9;]*[A-Za-z]", b"", line.split(b"\r")[-1])
             for line in said.replace(b"\r\n", b"\n").split(b"\n")]
    rows = [line for line in drawn if re.match(rb" +[24] +\d+ +\d+", line)]
    assert len(rows) == 2 and not any(b"scanning" in line for line in rows)
    assert said.index(b"         2 ") < said.index(b"100%")  # the first row before the scan ends
    piped = subprocess.run([sys.executable, "-m", "mcsa", *args], capture_output=True, timeout=300)
    assert piped.returncode == 0 and b"scanning" not in piped.stdout
    shown = [line for line in drawn if line.strip() and not line.startswith((b"scanning", b"note:"))]
    assert shown == piped.stdout.splitlines()


def test_presets_work_in_fit_plan_and_replay():
    fit = run("fit", "--target", "thumbv7em-debug", "--seq-len", 256, "--partitions", 4, "--dim", 32)
    assert fit.exit_code == 0 and "thumbv7em-debug" in fit.output and "4,294,967,295 B" in fit.output, fit.output
    replay = run("replay", EXAMPLES / "trace.jsonl", "--target", "wasm32-unknown", "--seq-len", 128, "--format",
                 "jsonl")
    assert replay.exit_code == 0 and json.loads(replay.stdout.splitlines()[0])["profile"] == "wasm32-unknown"


# --- profiles as users write them -------------------------------------------------------------------------


@pytest.mark.parametrize("name, message", [
    ("new-debug", "[new-debug]: a name ending in -debug cannot be picked (--target new-debug means the debug build "
                  "of new): drop the suffix"),
    ('""', "['']: a profile needs a name"),
    ("thumbv7em", "[thumbv7em] is the name of a simulator preset, which the row would hide: name your part otherwise"),
])
def test_a_profile_name_that_target_could_never_pick_is_refused(tmp_path, name, message):
    """`targets` listed [new-debug], which `--target new-debug` then could not find; [thumbv7em] hid the preset."""
    own = tmp_path / "p.toml"
    own.write_text(f'[{name}]\narch = "thumbv7em"\nram = 1000\nheap_budget = 1000\nallocator = "none"\n')
    refused(run("targets", "--profiles", own), f"{own}: {message}")


def test_a_profiles_row_may_change_one_field_of_a_built_in_one(tmp_path):
    own = tmp_path / "p.toml"
    own.write_text("[STM32F411]\nheap_budget = 98304\n")
    built_in, changed = load_profiles()["stm32f411"], load_profiles(own)["stm32f411"]
    assert changed.heap_budget == 98304 and changed == type(built_in)(**{**vars(built_in), "heap_budget": 98304})
    result = run("targets", "--profiles", own)
    assert result.exit_code == 0 and re.search(r"^stm32f411 .* 96 KiB ", result.output, re.M), result.output
    fit = run("fit", "--target", "stm32f411", "--profiles", own, "--seq-len", 64, "--partitions", 2, "--dim", 32)
    assert "of 98,304 B" in fit.output, fit.output
    own.write_text('[stm32f411]\nallocater = "tlsf"\n')  # was "missing allocator"
    refused(run("targets", "--profiles", own), f"{own}: [stm32f411]: unknown key `allocater`; did you mean `allocator`?")
    own.write_text('[stm32f411]\narch = "x86_64"\n')  # kept the built-in's 32-bit usize, silently
    refused(run("targets", "--profiles", own), f"{own}: [stm32f411] usize_bits 32 (from the stm32f411 this row "
            "overrides) does not match arch x86_64, a 64-bit target: give usize_bits = 64, or another arch")
    own.write_text('[stm32f411]\narch = "x86_64"\nusize_bits = 64\n')
    assert load_profiles(own)["stm32f411"].target().usize_bits == 64


def test_a_new_board_needs_four_fields_the_rest_follow_its_arch(tmp_path):
    own = tmp_path / "p.toml"
    own.write_text('[board]\narch = "thumbv6m"\nram = 8192\nheap_budget = 4096\nallocator = "newlib"\n')
    board = build_named("board", own)
    assert (board.target.usize_bits, board.target.expf.value, board.profile.fpu, board.target.nan.name) == (
        32, "libm-rs", "none", "soft-float")
    own.write_text('[board]\narch = "thumbv6m"\nram = 8192\n')
    refused(run("targets", "--profiles", own), "[board] is missing heap_budget, allocator (a new profile gives arch, "
                                               "ram, heap_budget, allocator;")


@pytest.mark.parametrize("path", [0, 3, b"p.toml", 1.5])
def test_a_profiles_file_must_be_a_path_not_a_descriptor(path):
    with pytest.raises(TypeError, match="profiles file must be a path"):
        build_named("stm32f411", path)


# --- what the API alone offered ---------------------------------------------------------------------------


def test_mask_stats_for_any_seq_len_the_target_takes():
    long = json.loads(run("mask", "--stats", "--seq-len", 70000, "--lambda", 200, "--partitions", 8,
                          "--target", "thumbv7em", "--json").stdout)
    assert long["num_positions"] == 296_319_232 and long["panic"] is None
    top = run("mask", "--stats", "--seq-len", 2**32 - 1, "--lambda", 200, "--partitions", 8, "--target", "thumbv7em")
    assert top.exit_code == 0 and "4,294,967,296 positions" in top.output


def test_a_refusal_counts_the_mask_that_would_be_built_and_points_at_stats():
    """The insertion count (306,285,180) is not the mask (296,319,232); the advice is for a CLI user."""
    args = ["mask", "--seq-len", 70000, "--lambda", 200, "--partitions", 8, "--target", "thumbv7em"]
    message = refused(run(*args), "build_mask(seq_len=70000) would hold 296,319,232 positions",
                      "raise --position-limit, or run `mcsa mask --stats`")
    assert "mask_stats()" not in message and "306,285,180" not in message


def test_a_debug_build_answers_with_its_first_panic_before_any_mask_is_built(monkeypatch):
    from mcsa.core.attention import MincutSparseAttention

    def never(*args):
        raise AssertionError("the mask was built")

    monkeypatch.setattr(MincutSparseAttention, "build_mask", never)
    result = run("mask", "--lambda", 200, "--partitions", 8, "--seq-len", 70000, "--target", "thumbv7em-debug")
    assert result.exit_code == 1 and "Error" not in result.output
    assert "296,319,232 positions" in result.output
    assert "build_mask completes; estimated_flops_ratio(mask, 70000) then panics: attempt to multiply with overflow" \
        in " ".join(result.output.split())
    wasm = run("mask", "--lambda", 200, "--partitions", 65535, "--seq-len", 70000, "--target", "wasm32-debug",
               "--json")
    record = json.loads(wasm.stdout)
    assert wasm.exit_code == 1 and record["panicking_call"] == "estimated_flops_ratio"
    assert record["panic"] == "attempt to multiply with overflow" and record["num_positions"] == 10_035_881


def test_a_panic_of_build_mask_itself_is_named_so():
    cfg = {"max_cross_partition_edges": 65535, "intra_partition_attention": False}
    result = run("mask", "--seq-len", 131070, "--lambda", 200, "--partitions", 2, "--target", "thumbv7em-debug",
                 "--config", _write(cfg), "--json")
    record = json.loads(result.stdout)
    assert result.exit_code == 1 and record["panicking_call"] == "build_mask" and record["num_positions"] is None


def _write(config: dict) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "cfg.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("seq_len,partitions,target", [(48, 3, "x86_64"), (4096, 8, "thumbv7em"),
                                                        (70000, 65535, "wasm32"), (10, 3, "x86_64")])
def test_mask_shows_representations_and_op_counts_of_the_library(seq_len, partitions, target):
    record = json.loads(run("mask", "--seq-len", seq_len, "--lambda", 200, "--partitions", partitions,
                            "--target", target, "--dim", 32, "--json").stdout)
    sim = mcsa.MincutSparseAttention(target=target)
    gate = mcsa.GatePacket(lambda_=200, partition_count=partitions)
    built = sim.build_mask(gate, seq_len)
    assert record["num_positions"] == built.num_positions
    assert record["representations"] == representations(built.stats(), seq_len)
    queries, counts = np.unique(built.positions[:, 0], return_counts=True)
    assert record["op_counts"] == op_counts((queries, counts), 32)
    stats = json.loads(run("mask", "--stats", "--seq-len", seq_len, "--lambda", 200, "--partitions", partitions,
                           "--target", target, "--dim", 32, "--json").stdout)
    wraps = seq_len > 65536
    assert stats["op_counts"] == (None if wraps else record["op_counts"])  # the same, without the mask
    assert {k: v for k, v in stats.items() if k != "op_counts"} == {k: v for k, v in record.items() if k != "op_counts"}


def test_verify_takes_the_kind_from_an_option(tmp_path):
    import gzip

    from mcsa.app import verify
    from mcsa.cli import inspect

    assert inspect.KINDS == verify.KINDS  # the CLI's copy, so that `verify --help` loads no kernels

    dump = tmp_path / "fw_dump.jsonl"
    dump.write_bytes(gzip.decompress((GOLDEN / "density.jsonl.gz").read_bytes()).splitlines(keepends=True)[0])
    refused(run("verify", dump, "--target", "x86_64-release"), "fw_dump.jsonl: cannot tell the case kind",
            "or give --kind")
    result = run("verify", dump, "--target", "x86_64-release", "--kind", "density")
    assert result.exit_code == 0 and "1 density case, 0 mismatches for x86_64-release" in result.output
    spelled = run("verify", dump, "--build", "x86_64", "--kind", "density", "--json")
    assert json.loads(spelled.stdout) == {"file": str(dump), "kind": "density", "target": "x86_64-release",
                                          "cases": 1, "mismatches": 0, "not_run": 0, "first_mismatch": None}


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(density="zzzz"), "density must be an f32 bit pattern of 8 hex digits, got 'zzzz'"),
    (lambda r: r.update(density="0x3f666666"), "density must be an f32 bit pattern of 8 hex digits"),
    (lambda r: r.update(extra=1), "a density result has no field 'extra' (it holds density): is this a density "
                                  "file? (--kind)"),
])
def test_verify_refuses_a_malformed_expected_result_instead_of_calling_it_a_mismatch(tmp_path, edit, message):
    """Exit 1 blamed the simulator for a dump it could never have matched."""
    case = json.loads(gzip.open(GOLDEN / "density.jsonl.gz", "rt").readline())
    edit(case["results"]["x86_64-release"])
    dump = tmp_path / "dump.jsonl"
    dump.write_text(json.dumps(case) + "\n")
    refused(run("verify", dump, "--build", "x86_64", "--kind", "density"), f"{dump}:1: {message}")
    masks = tmp_path / "masks.jsonl"
    masks.write_text(gzip.open(GOLDEN / "masks.jsonl.gz", "rt").readline())
    refused(run("verify", masks, "--build", "x86_64", "--kind", "density"), f"{masks}:1: a density result has no field")


def test_verify_counts_the_cases_a_build_could_not_run_apart():
    result = run("verify", GOLDEN / "firmware" / "full.jsonl.gz", "--build", "thumbv7em-debug")
    assert result.exit_code == 0 and re.search(r": [0-9,]+ full cases, 0 mismatches for thumbv7em-debug \(99 cases "
                                               r"the build could not run, with a harness_error, not compared\)",
                                               result.stdout), result.output


# --- output formats ---------------------------------------------------------------------------------------


def test_an_output_file_takes_its_format_from_its_extension(tmp_path):
    args = ["mask", "--seq-len", 48, "--lambda", 100, "--partitions", 3]
    assert run(*args, "-o", tmp_path / "m.json").exit_code == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_positions"] == 420
    assert run(*args, "-o", tmp_path / "m.txt").exit_code == 0
    assert (tmp_path / "m.txt").read_text().startswith("x86_64-release: seq_len 48")
    refused(run(*args, "-o", tmp_path / "m.csv"), "m.csv: a .csv file, a format this command does not write")
    refused(run(*args, "--format", "json", "-o", tmp_path / "n.txt"), "names table by its extension, --format says json")
    refused(run(*args, "--json", "--format", "table"), "--json and --format table contradict each other")
    refused(run("attention", *_qkv(tmp_path, 32, 4), "--dim", 4, "--scale", 0.5, "-o", tmp_path / "o.json"),
            "attention writes its f32 output as .npy")
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "n.txt").exists()


def test_no_input_is_ever_an_output(tmp_path):
    qkv = _qkv(tmp_path, 32, 4)
    before = (tmp_path / "q.npy").read_bytes()
    (tmp_path / "link.npy").symlink_to(tmp_path / "q.npy")
    for output in (tmp_path / "q.npy", tmp_path / "link.npy"):
        refused(run("attention", *qkv, "--dim", 4, "--scale", 0.5, "-o", output), f"-o {output}: is the same file as the input --q")
    assert (tmp_path / "q.npy").read_bytes() == before
    refused(run("mask", "--seq-len", 48, "-o", tmp_path / "m.txt", "--png", tmp_path / "m.txt"), "--png", "is the same file as -o")
    dump = tmp_path / "density-x.json"
    dump.write_text("{}\n")
    refused(run("verify", dump, "--target", "x86_64", "-o", dump), "is the same file as the input")
    assert dump.read_text() == "{}\n"


def test_tables_fit_a_hundred_columns_unless_wide():
    narrow = run("targets").stdout.splitlines()
    assert max(map(len, narrow)) <= TABLE_WIDTH and any(line.endswith("…") for line in narrow)
    wide = run("targets", "--wide").output
    assert "Generic Cortex-M4F under FreeRTOS heap_4 (configTOTAL_HEAP_SIZE 64 KiB)" in wide
    listed = json.loads(run("targets", "--json").stdout)
    assert {p["name"] for p in listed["profiles"]} >= {"stm32f411", "esp32s3"} and len(listed["presets"]) == 15
    for args in (["mask", "--seq-len", 70000, "--lambda", 200, "--partitions", 65535, "--target", "wasm32", "--stats"],
                 ["mask", "--seq-len", 48, "--lambda", 100, "--partitions", 3]):
        assert max(map(len, run(*args).stdout.splitlines())) <= TABLE_WIDTH
    acts = Path(__file__).parent / "data" / "quality" / "declaration_l3_l20_h012_t128.npz"
    quality = run("quality", "--activations", acts, "--partitions", 2, "--masks", "reference")
    assert max(map(len, quality.stdout.splitlines())) <= TABLE_WIDTH and "int8_err_vs_dense_median" not in quality.stdout
    wide = run("quality", "--activations", acts, "--partitions", 2, "--masks", "reference", "--wide").stdout
    assert "int8_err_vs_dense_median" in wide and "mask_bytes" in wide and max(map(len, wide.splitlines())) > TABLE_WIDTH


def test_plurals_are_right(tmp_path):
    one = run("mask", "--seq-len", 1, "--lambda", 100, "--partitions", 1).output
    assert "1 partition, 1 position" in one
    assert "0 partitions" not in run("mask", "--seq-len", 0).output


# --- help -------------------------------------------------------------------------------------------------


def _after(arg_lists: list, report: str) -> str:
    """What a fresh interpreter prints running ``mcsa`` with each of ``arg_lists``, then
    ``print(report)`` (its last line)."""
    probe = (f"import sys\nfrom mcsa.cli import COMMANDS, main\nfor args in {arg_lists!r}:\n    try:\n"
             f"        main(args)\n    except SystemExit:\n        pass\nprint({report})")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout


def test_the_command_list_is_whole_sentences_and_imports_no_command():
    stdout = _after([["--help"]], "sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba') or m in "
                                  "{module for module, _ in COMMANDS.values()})")
    assert stdout.strip().splitlines()[-1] == "[]", stdout[-300:]
    text = " ".join(stdout.split())
    for name, (_, summary) in COMMANDS.items():
        assert summary.endswith(".") and f"{name} {summary}" in text, name


@pytest.mark.parametrize("command", COMMANDS)
def test_required_options_come_first(command):
    params = [p for p in main.get_command(click.Context(main), command).params if isinstance(p, click.Option)]
    required = [p.required for p in params]
    assert required == sorted(required, reverse=True), [p.name for p in params]


def _examples(command: str) -> list[list[str]]:
    text = run(command, "--help").output
    block = text[text.index("Example:"):].split("\n\n")[0]
    lines = [line.strip() for line in block.splitlines()[1:]]
    joined = " ".join(lines).replace("\\ ", "").split(" mcsa ")
    return [shlex.split(("" if i == 0 else "mcsa ") + cmd)[1:] for i, cmd in enumerate(joined)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_example_runs_as_given(tmp_path, command, monkeypatch):
    """In an empty folder holding the repository's examples/ and tests/ (as after a clone);
    the other samples an example uses come from `mcsa example` in the example itself.
    replay's and fit's examples show a verdict against the run (exit 1); quality's fetch
    the model once (93 MB, cached) and run it over a book."""
    for name in ("examples", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    for args in _examples(command):
        result = run(*map(os.path.expanduser, args))
        assert result.exit_code in ((0, 1) if command in ("replay", "fit") else (0,)), (args, result.output)


def test_every_command_has_an_example():
    for command in COMMANDS:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, command


# --- mcsa example -----------------------------------------------------------------------------------------


def test_example_writes_samples_and_never_overwrites(tmp_path):
    result = run("example", "all", "--dir", tmp_path)
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.txt", "k.npy", "profiles.toml", "q.npy",
                                                          "sparse.toml", "v.npy"]
    assert np.load(tmp_path / "q.npy").shape == (128, 32) and len((tmp_path / "book.txt").read_text().split()) > 800
    assert load_profiles(tmp_path / "profiles.toml")["stm32f411"].heap_budget == 98304
    (tmp_path / "q.npy").write_bytes(b"mine")
    refused(run("example", "qkv", "--dir", tmp_path), "q.npy, ", "v.npy are already there; nothing written")
    assert (tmp_path / "q.npy").read_bytes() == b"mine"


def test_example_names_a_dangling_link_and_a_dir_that_is_no_folder(tmp_path):
    (tmp_path / "book.txt").symlink_to(tmp_path / "gone" / "book.txt")
    refused(run("example", "book", "--dir", tmp_path), f"book.txt (a symlink to {tmp_path / 'gone' / 'book.txt'}) is "
                                                       "already there; nothing written")
    assert not (tmp_path / "gone").exists()
    (tmp_path / "file").write_bytes(b"mine")
    refused(run("example", "config", "--dir", tmp_path / "file"), f"Directory '{tmp_path / 'file'}' is a file")
    refused(run("example", "config", "--dir", os.devnull), f"--dir {os.devnull}: not a folder")
    refused(run("example", "config", "--dir", tmp_path / "file" / "sub"), f"--dir {tmp_path / 'file' / 'sub'}: "
                                                                          "cannot make it: Not a directory")
    assert (tmp_path / "file").read_bytes() == b"mine"
    (tmp_path / "dd").symlink_to(tmp_path / "nowhere")
    refused(run("example", "config", "--dir", tmp_path / "dd"), f"--dir {tmp_path / 'dd'}: a symlink to "
                                                                f"{tmp_path / 'nowhere'}, which does not exist")


# --- the mask picture -------------------------------------------------------------------------------------


def test_the_mask_picture_shows_every_kind_of_position_at_1024_tokens():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcsa.cli.inspect import mask_figure

    m = mcsa.MincutSparseAttention().build_mask(mcsa.GatePacket(lambda_=100, partition_count=8), 1024)
    fig = mask_figure(plt, m.positions, m.partition_boundaries, 1024, "t")
    image = fig.axes[0].images[0].get_array()
    assert image.shape[:2] == (128, 128)  # blocks of 8 x 8 tokens: several pixels each
    red = np.all(np.isclose(image, (0.85, 0.1, 0.1)), axis=-1)
    # token 128 (a boundary) attends to boundary token 0: the block (16, 0); and no red above the diagonal
    assert red[128 // 8, 0] and not np.triu(red, 1).any()
    blue = (image[..., 2] > image[..., 0]) & ~red
    assert blue[5, 2] and not blue[20, 2]  # inside partition 0, and not across partitions
    assert fig.axes[0].get_xlabel() == "key token" and fig.axes[0].get_title() == "t"
    plt.close(fig)


def test_a_stats_run_draws_nothing():
    refused(run("mask", "--seq-len", 48, "--stats", "--png", "x.png"), "--png draws the mask, which --stats does not build")


# --- a first day's mistakes: a refusal naming the place, or an answer -------------------------------------


@pytest.mark.parametrize("args,fragment", [
    (["maks", "--seq-len", 48], "No such command 'maks'; did you mean mask?"),
    (["mask", "--seq-len", 48, "--partition", 3], "No such option '--partition'. Did you mean '--partitions'?"),
    (["mask", "--seq-len", "48k"], "'48k' is not an integer"),
    (["mask", "--seq-len", 48, "--lambda", -5], "--lambda"),
    (["mask", "--seq-len", 48, "--partitions", "2..8"], "--partitions"),
    (["mask", "--lambda", 100], "Missing option '--seq-len'"),
    (["mask", "--seq-len", 48, "--target", "stm32"], "--target: unknown target 'stm32'; did you mean"),
    (["mask", "--seq-len", 48, "--target", "thumbv7em-dbg"], "did you mean thumbv7em-debug"),
    (["mask", "--seq-len", 48, "--target", "stm\udcff32"], "--target: unknown target 'stm\\xff32';"),  # a byte not UTF-8
    (["mask", "--seq-len", 48, "--gate", "lambda=100"], "--gate: not JSON"),
    (["verify", "--target", "x86_64"], "Missing argument 'FILE'"),
    (["attention", "--q", "q.npy"], "'q.npy' does not exist"),
    (["targets", "--profile", "p.toml"], "No such option '--profile'. Did you mean '--profiles'?"),
    (["example"], "Missing argument"),
])
def test_first_day_mistakes_are_refused_naming_the_place(args, fragment):
    refused(run(*args), fragment)


def test_argument_errors_and_help_need_no_kernels():
    """They answer before the simulator loads (the timings: tools/bench_cli.py)."""
    stdout = _after([["--help"], ["mask", "--help"], ["mask", "--seq-len", "x"], ["maks"], ["verify", "--help"],
                     ["attention", "--help"], ["targets", "--help"]], "'LOADED', 'numba' in sys.modules, 'numpy' in sys.modules")
    assert stdout.splitlines()[-1] == "LOADED False False", stdout[-500:]


def test_every_command_help_and_usage_error_loads_no_numba():
    """The commands that run the simulator (replay, plan, fit, quality) load it to run,
    not to show their help or refuse their options or target names: NumPy at most."""
    stdout = _after([["replay", "--help"], ["plan", "--help"], ["fit", "--help"], ["quality", "--help"],
                     ["example", "--help"], ["replay", "t.bin", "--seq-len", "x"], ["plan", "--dim", "-1"],
                     ["fit", "--allocator", "nope"], ["quality", "--sinks", "x"], ["quality", "capture", "--help"],
                     ["plan", "--target", "stm32f412"], ["replay", "t.bin", "--target", "nope", "--seq-len", "8"]],
                    "'LOADED', 'numba' in sys.modules")
    assert stdout.splitlines()[-1] == "LOADED False", stdout[-500:]


def test_the_first_compile_says_so_once(tmp_path):
    args = ["mask", "--seq-len", 20, "--lambda", 100, "--partitions", 2]
    cold = mcsa_process(*args, env={"NUMBA_CACHE_DIR": str(tmp_path)})
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.count("note: compiling mcsa's kernels for this machine, once") == 1
    assert re.search(r"^note: compiled in \d+ s$", cold.stderr, re.M)
    warm = mcsa_process(*args, env={"NUMBA_CACHE_DIR": str(tmp_path)})
    assert warm.returncode == 0 and warm.stderr == ""


def test_fit_and_quality_refuse_an_output_that_is_an_input(tmp_path):
    config = tmp_path / "c.json"
    config.write_text("{}")
    refused(run("fit", "--target", "stm32f411", "--seq-len", 64, "--partitions", 2, "--config", config,
                "--png", config), "--png", "is the same file as the input --config")
    assert config.read_text() == "{}"
    acts = tmp_path / "acts.npz"
    acts.write_bytes(b"not touched")
    refused(run("quality", "--activations", acts, "-o", acts), "-o", "a .npz file, a format this command does not write")
    os.link(acts, tmp_path / "report.txt")  # the same file by a name that says table
    refused(run("quality", "--activations", acts, "-o", tmp_path / "report.txt"), "-o",
            "is the same file as the input --activations")
    refused(run("quality", "capture", "--model", acts, "--tokens", acts, "-o", acts), "is the same file as the input")
    assert acts.read_bytes() == b"not touched"


@pytest.mark.parametrize("args", [
    ("targets", "--profiles"), ("mask", "--seq-len", 8, "--config"), ("fit", "--seq-len", 8, "--target", "rp2040", "--config"),
])
@pytest.mark.parametrize("content, message", [
    (b"\xef\xbb\xbf\xff", "not UTF-8 (byte 0)"),  # the byte after a BOM
    (b"#" * (1 << 20) + b"\n", "larger than 1,048,576 bytes, the most read"),
])
def test_config_and_profiles_files_are_read_by_one_rule(tmp_path, args, content, message):
    path = tmp_path / "settings.toml"
    path.write_bytes(content)
    refused(run(*args, path), f"{path}: {message}")
    if args[0] == "targets":
        with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
            load_profiles(path)


@pytest.mark.parametrize("args, message", [
    (("replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128, "-o", "{tmp}/r.jsonl.gz"),
     "-o {tmp}/r.jsonl.gz: a .gz file is a format replay does not write"),
    (("replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128, "--summary", "{tmp}/s.parquet"),
     "--summary {tmp}/s.parquet: a .parquet file, but --summary writes jsonl: name it .jsonl"),
    (("replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128, "--plot", "{tmp}/p.pdf"),
     "--plot {tmp}/p.pdf: a .pdf file, but --plot writes png: name it .png"),
    (("mask", "--seq-len", 8, "-o", "{tmp}/m.png"), "-o {tmp}/m.png: a .png file, a format this command does not"),
    (("mask", "--seq-len", 8, "--png", "{tmp}/m.jpg"), "--png {tmp}/m.jpg: a .jpg file, but --png writes png"),
    (("fit", "--target", "stm32f411", "--seq-len", 8, "--png", "{tmp}/f.svg"), "--png {tmp}/f.svg: a .svg file"),
    (("quality", "--activations", ROOT / "tests/data/quality/declaration_l3_l20_h012_t128.npz", "-o", "{tmp}/q.parquet"),
     "-o {tmp}/q.parquet: a .parquet file, a format this command does not write (it writes table, json, csv"),
])
def test_an_output_is_written_in_the_format_its_name_says_or_refused(tmp_path, args, message):
    """mask -o m.png wrote a table, replay -o r.jsonl.gz plain text that replay then refused
    as not gzip, --summary s.parquet JSON Lines, --png f.svg a PNG: refused before any work."""
    refused(run(*(str(a).replace("{tmp}", str(tmp_path)) for a in args)), message.replace("{tmp}", str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_quality_writes_the_format_its_output_names(tmp_path):
    acts = ROOT / "tests/data/quality/declaration_l3_l20_h012_t128.npz"
    for name, check in [("q.json", lambda text: json.loads(text)["results"]),
                        ("q.csv", lambda text: text.startswith("partitions,mask,")),
                        ("q.txt", lambda text: text.startswith("1 text"))]:
        assert run("quality", "--activations", acts, "--no-exact", "--masks", "reference", "-o",
                   tmp_path / name).exit_code == 0
        assert check((tmp_path / name).read_text()), name


def test_verify_tells_gzip_by_its_content(tmp_path):
    path = tmp_path / "density-x.jsonl"  # gzip, named as plain JSON Lines
    path.write_bytes((GOLDEN / "density.jsonl.gz").read_bytes())
    result = run("verify", path, "--target", "x86_64-release")
    assert result.exit_code == 0 and "3,000 density cases, 0 mismatches" in result.stdout


def test_quality_lists_its_subcommands_in_whole_sentences():
    text = " ".join(run("quality", "--help").output.split())
    assert "capture Save a model's q, k, v on a text as activations (.npz)." in text
    assert "fetch-model Download SmolLM2-135M-Instruct (GGUF) into the cache." in text


def test_a_gate_key_close_to_a_field_gets_a_guess():
    result = run("mask", "--seq-len", 16, "--gate", '{"lambda": 100, "partitions": 3}')
    assert "--gate: unknown key `partitions` ignored (did you mean `partition_count`?)" in result.stderr


def test_a_profiles_file_writes_sizes_as_the_heap_budget_option_does(tmp_path):
    """One byte-size rule (mcsa.core.checks.parse_byte_size): "96K" in a profile as on the command line."""
    own = tmp_path / "p.toml"
    own.write_text('[stm32f411]\nheap_budget = "96K"\n[myboard]\narch = "thumbv6m"\nram = "32 KiB"\n'
                   'heap_budget = "16K"\nallocator = "linked-list"\nregions = { sram = "32K" }\nheap_region = "sram"\n')
    profiles = load_profiles(own)
    assert (profiles["stm32f411"].heap_budget, profiles["myboard"].ram, profiles["myboard"].heap_budget) == (
        98304, 32768, 16384)
    assert profiles["myboard"].regions == {"sram": 32768}
    own.write_text('[stm32f411]\nheap_budget = "96KB"\n')
    refused(run("targets", "--profiles", own), f"{own}: [stm32f411] heap_budget '96KB': write 96K or 96KiB")
    refused(run("fit", "--target", "stm32f411", "--seq-len", 8, "--heap-budget", "96KB"), "'96KB': write 96K or 96KiB")
