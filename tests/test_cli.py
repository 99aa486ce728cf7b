"""The mcsa command with click's CliRunner: every command, and every kind of malformed input."""

import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner

from mcsa.cli import main
from mcsa.cli.common import dumps
from mcsa.core.packets import PACKET_DTYPE

from .conftest import GOLDEN

EXAMPLES = GOLDEN.parent.parent / "examples"
TRACE_ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def jsonl(output):
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_help_shows_examples_for_every_command():
    assert "Example:" in run("--help").output
    for command in ("replay", "mask", "plan", "fit", "targets", "verify", "attention"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, command


@pytest.mark.parametrize("name", ["trace.jsonl", "trace.csv", "trace.bin", "trace.jsonl.gz"])
def test_replay_reads_every_format_alike(name):
    result = run("replay", EXAMPLES / name, *TRACE_ARGS, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    header, *records, summary = jsonl(result.stdout)
    assert header["schema_version"] == 2 and header["profile"] == "stm32f411" and header["config"]["max_cross_partition_edges"] == 20
    assert len(records) == 400 and summary["summary"]["packets"] == 400
    assert all(list(r) == header["columns"] for r in records)
    reference = jsonl(run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--format", "jsonl").stdout)[1:-1]
    strip = lambda r: {k: v for k, v in r.items() if k != "t"}  # .bin has no timestamps
    assert [strip(r) for r in records] == [strip(r) for r in reference]


def test_replay_record_fields_match_the_library():
    import mcsa
    from firmware_model.heap import build_mask_usage

    first = jsonl(run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--format", "jsonl").stdout)[1]
    gate = mcsa.GatePacket.from_dict(json.loads((EXAMPLES / "trace.jsonl").read_text().splitlines()[0]))
    sim = mcsa.MincutSparseAttention(target=mcsa.Target(32, "wrap", "libm-rs"))
    mask = sim.build_mask(gate, 128)
    assert first["num_positions"] == mask.num_positions
    assert np.float32(first["density"]) == mask.density and np.float32(first["target_density"]) == sim.calculate_density(gate)
    assert first["build_mask_peak_bytes"] == build_mask_usage(sim.config, gate, 128, 32).peak_bytes
    assert first["partitions"] == 4 and first["boundary_tokens"] == 4 and first["panic"] is None
    from firmware_model.profiles import profile_named
    from mcsa.app.replay import Replayer

    api = Replayer(profile_named("stm32f411"), "release", sim.config, 128, 32).record(0, gate, t=0.0)
    assert json.loads(dumps(api)) == first


def test_replay_fail_on_and_exit_codes(tmp_path):
    ok = run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--heap-budget", 10**7, "--fail-on", "over-budget,panic")
    assert ok.exit_code == 0
    over = run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--fail-on", "over-budget")
    assert over.exit_code == 1 and "goes over the heap budget" in over.stderr
    assert run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--fail-on", "smoke").exit_code == 2


def test_replay_panics_on_a_debug_build(tmp_path):
    trace = tmp_path / "t.jsonl"
    second = json.dumps({**json.loads(jsonl_record(partition_count=2)), "seq_len": 65536})
    trace.write_text(jsonl_record(partition_count=2) + "\n" + second + "\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"intra_partition_attention": False, "boundary_cross_attention": True,
                               "lambda_based_density": None, "max_cross_partition_edges": 65535,
                               "min_density_q15": 0, "max_density_q15": 0}))
    # 2 partitions of 65535 tokens: token 65535 + 1 overflows the u16 add
    result = run("replay", trace, "--target", "stm32f411-debug", "--seq-len", 131070, "--dim", 1,
                 "--config", cfg, "--format", "jsonl", "--fail-on", "panic")
    assert result.exit_code == 1 and "2 packets panic" in result.stderr
    first, second = jsonl(result.stdout)[1:3]
    assert first["panic"] == "attempt to add with overflow" and first["num_positions"] is None
    # 65536 tokens in 2 partitions: the mask builds; 65536 * 65537 overflows a 32-bit usize in the flops ratio
    assert second["panic"] == "attempt to multiply with overflow" and second["num_positions"] > 0
    assert second["flops_ratio"] is None
    release = jsonl(run("replay", trace, "--target", "stm32f411", "--seq-len", 131070, "--dim", 1,
                        "--config", cfg, "--format", "jsonl").stdout)[1:3]
    assert [r["panic"] for r in release] == [None, None]


def test_replay_output_file_and_csv(tmp_path):
    out = tmp_path / "out.csv"
    result = run("replay", EXAMPLES / "trace.csv", *TRACE_ARGS, "--format", "csv", "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    lines = out.read_text().splitlines()
    assert lines[0].startswith("index,t,seq_len,target_density,sparse") and len(lines) == 401
    assert "packets 400" in result.stderr


def jsonl_record(**change):
    record = {"lambda": 100, "lambda_prev": 90, "boundary_edges": 1, "boundary_concentration_q15": 10,
              "partition_count": 3, "flags": 0}
    record.update(change)
    return json.dumps({k: v for k, v in record.items() if v is not ...})


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.jsonl", jsonl_record() + "\n{not json\n", "bad.jsonl:2: not JSON"),
        ("bad.jsonl", jsonl_record(partition_count=70000) + "\n", "bad.jsonl:1: partition_count must be in 0..=65535"),
        ("bad.jsonl", jsonl_record(flags="x") + "\n", "bad.jsonl:1: flags must be an integer, got str"),
        ("bad.jsonl", jsonl_record(flags=...) + "\n", "bad.jsonl:1: gate packet is missing field(s): flags"),
        ("bad.jsonl", "[1, 2]\n", "bad.jsonl:1: a record must be a JSON object"),
        ("bad.csv", "lambda,flags\n1,2\n", "bad.csv:1: CSV header lacks lambda_prev"),
        ("bad.csv", "lambda,lambda_prev,boundary_edges,boundary_concentration_q15,partition_count,flags\n"
                    "1,2,3,4,5,6\n1,2,3,4,x,6\n", "bad.csv:3: partition_count must be an integer, got 'x'"),
        ("bad.csv", "lambda,lambda_prev,boundary_edges,boundary_concentration_q15,partition_count,flags\n"
                    "1,2,3,4,5,-6\n", "bad.csv:2: flags must be in 0..=65535"),
        ("bad.txt", "x", "cannot tell the trace format"),
    ],
)
def test_malformed_text_traces(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "out.jsonl"
    result = run("replay", path, *TRACE_ARGS, "-o", out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.glob(".out.jsonl.*")) == []


def test_binary_size_not_a_multiple_of_16(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(np.zeros(3, PACKET_DTYPE).tobytes() + b"\x01\x02\x03")
    result = run("replay", path, *TRACE_ARGS)
    assert result.exit_code == 2 and "t.bin: byte 48: incomplete record (3 of 16 bytes)" in result.stderr
    skipped = run("replay", path, *TRACE_ARGS, "--skip-bad", "--format", "jsonl")
    assert skipped.exit_code == 0 and jsonl(skipped.stdout)[-1]["summary"]["bad_records"] == 1


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    data = gzip.compress((jsonl_record() + "\n").encode() * 100)
    path.write_bytes(data[: len(data) // 2])
    result = run("replay", path, *TRACE_ARGS)
    assert result.exit_code == 2 and "t.jsonl.gz: corrupt gzip stream" in result.stderr


def test_skip_bad_counts_and_goes_on(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(jsonl_record() + "\n{oops\n" + jsonl_record(lambda_prev=-1) + "\n" + jsonl_record() + "\n")
    result = run("replay", path, *TRACE_ARGS, "--skip-bad", "--format", "jsonl")
    assert result.exit_code == 0
    records = jsonl(result.stdout)
    assert len(records) == 4 and records[-1]["summary"]["bad_records"] == 2
    assert [r["index"] for r in records[1:-1]] == [0, 1]
    assert "t.jsonl:2: not JSON" in result.stderr and "t.jsonl:3: lambda_prev must be in" in result.stderr


def test_record_seq_len_overrides(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({**json.loads(jsonl_record()), "seq_len": 64}) + "\n" + jsonl_record() + "\n")
    records = jsonl(run("replay", path, *TRACE_ARGS, "--format", "jsonl").stdout)[1:-1]
    assert [r["seq_len"] for r in records] == [64, 128]


def test_position_limit_option(tmp_path):
    big = run("mask", "--lambda", 100, "--partitions", 2, "--seq-len", 4096, "--position-limit", 1000)
    assert big.exit_code == 2 and "position limit of 1,000" in big.stderr and "--position-limit" in big.stderr
    assert run("mask", "--lambda", 100, "--partitions", 2, "--seq-len", 4096).exit_code == 0


def test_unknown_target_and_config_errors(tmp_path):
    result = run("replay", EXAMPLES / "trace.jsonl", "--target", "avr", "--seq-len", 8)
    assert result.exit_code == 2 and "unknown target 'avr'" in result.stderr
    bad = tmp_path / "cfg.json"
    bad.write_text('{"intra_partition_attention": 1}')
    result = run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--config", bad)
    assert result.exit_code == 2 and "cfg.json: intra_partition_attention must be" in result.stderr
    bad.write_text('{\n  "intra_partition_attention": true,\n  "boundary_cross_attention": false\n  "x": 1\n}\n')
    result = run("replay", EXAMPLES / "trace.jsonl", *TRACE_ARGS, "--config", bad)
    assert result.exit_code == 2 and "cfg.json: not JSON (Expecting ',' delimiter at line 4, column 3)" in result.stderr


def test_config_from_toml(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('intra_partition_attention = true\nboundary_cross_attention = false\nlambda_based_density = '
                   '"Adaptive"\nmax_cross_partition_edges = 20\nmin_density_q15 = 3277\nmax_density_q15 = 29491\n')
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 24, "--config", cfg)
    assert result.exit_code == 0 and "108 positions" in result.output  # intra only: 3 * (8 * 9 / 2)


def test_mask_ascii_and_png(tmp_path):
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 24)
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if set(line) <= {"#", "."} and line]
    assert len(rows) == 24 and rows[8] == "#.......#..............."


def test_plot_and_png(tmp_path):
    plot, png = tmp_path / "replay.png", tmp_path / "mask.png"
    result = run("replay", EXAMPLES / "trace.bin", *TRACE_ARGS, "-o", tmp_path / "r.jsonl", "--plot", plot)
    assert result.exit_code == 0 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run("mask", "--lambda", 100, "--partitions", 8, "--seq-len", 4096, "--png", png)
    assert result.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_and_fit():
    result = run("fit", "--target", "stm32f411", "--seq-len", 256, "--partitions", 4, "--dim", 32)
    assert result.exit_code == 1 and "requested 139,548 B, available 65,536 B, missing 74,012 B" in " ".join(
        result.output.split())  # (the verdict is wrapped at 100 columns)
    assert max(map(len, result.output.splitlines())) <= 100
    fits = run("fit", "--target", "stm32f411", "--seq-len", 64, "--partitions", 4, "--dim", 32, "--json")
    assert fits.exit_code == 0 and json.loads(fits.stdout)["fits"] is True
    rows = json.loads(run("plan", "--target", "stm32f411", "--dim", 32, "--partitions", "2..4", "--json").stdout)
    from firmware_model.profiles import profile_named
    from firmware_model.step import capacity_table
    import mcsa
    assert rows == capacity_table(profile_named("stm32f411"), mcsa.SparsityConfig(), 32, range(2, 5))
    assert rows[0]["max_seq_len"] == 123 and rows[2]["max_seq_len"] == 167  # as in the README
    refused = run("plan", "--target", "stm32f411", "--partitions", "9..2")
    assert refused.exit_code == 2 and "9..2 runs downwards; write 2..9" in refused.output


def test_plan_and_fit_take_the_gate_as_every_command_does():
    """The gate bundle of mask and attention: --lambda, --concentration... or a recorded --gate."""
    import mcsa
    from firmware_model.profiles import profile_named
    from firmware_model.step import capacity_table, fit_step

    gate = mcsa.GatePacket(lambda_=60, lambda_prev=90, boundary_edges=3, boundary_concentration_q15=8192,
                           partition_count=4, flags=0)
    rows = json.loads(run("plan", "--target", "stm32f411", "--dim", 32, "--partitions", "4", "--max-seq-len", 300,
                          "--gate", json.dumps(gate.to_dict()), "--json").stdout)
    assert rows == capacity_table(profile_named("stm32f411"), mcsa.SparsityConfig(), 32, [4], gate, hi=300)
    by_fields = run("fit", "--target", "stm32f411", "--seq-len", 200, "--dim", 32, "--lambda", 60, "--lambda-prev", 90,
                    "--boundary-edges", 3, "--concentration", 8192, "--partitions", 4, "--json")
    by_packet = run("fit", "--target", "stm32f411", "--seq-len", 200, "--dim", 32, "--gate", json.dumps(gate.to_dict()),
                    "--json")
    report = fit_step(profile_named("stm32f411"), mcsa.SparsityConfig(), gate, 200, 32)
    assert by_fields.stdout == by_packet.stdout
    assert json.loads(by_fields.stdout)["step_peak_bytes"] == report.step_peak_bytes
    assert by_fields.exit_code == (0 if report.fits else 1)


def test_targets_lists_profiles_and_presets():
    result = run("targets")
    assert result.exit_code == 0
    for name in ("stm32f103", "stm32h743", "rp2040", "esp32s3", "samd21", "x86_64-debug", "thumbv7em-release"):
        assert name in result.output


def test_verify_golden_and_a_tampered_file(tmp_path):
    ok = run("verify", GOLDEN / "scalar.jsonl.gz", "--build", "wasm32-debug")
    assert ok.exit_code == 0 and "400 scalar cases, 0 mismatches" in ok.output
    lines = gzip.open(GOLDEN / "density.jsonl.gz", "rt").read().splitlines()[:5]
    case = json.loads(lines[2])
    bits = int(case["results"]["x86_64-release"]["density"], 16)
    case["results"]["x86_64-release"]["density"] = f"{bits + 3:08x}"
    lines[2] = json.dumps(case)
    tampered = tmp_path / "density-mine.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    result = run("verify", tampered, "--build", "x86_64-release")
    assert result.exit_code == 1
    assert "5 density cases, 1 mismatch for x86_64-release" in result.output and "line 3" in result.output
    assert f"density: expected \"{bits + 3:08x}\", got \"{bits:08x}\" (3 ULPs apart)" in result.output


def test_attention_against_float64(tmp_path):
    rng = np.random.default_rng(3)
    for name in "qkv":
        np.save(tmp_path / f"{name}.npy", rng.integers(-8, 8, 64 * 16).astype(np.int8))
    out = tmp_path / "out.npy"
    result = run("attention", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy",
                 "--dim", 16, "--scale", 0.25, "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["seq_len"] == 64 and type(report["max_ulp_error"]) is int and 0 <= report["max_ulp_error"] < 64
    assert np.load(out).dtype == np.float32
    np.save(tmp_path / "q.npy", np.zeros(4, np.float32))
    bad = run("attention", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy",
              "--dim", 16, "--scale", 0.25)
    assert bad.exit_code == 2 and "q.npy: must be int8, got float32" in bad.stderr and "--q" in bad.stderr
