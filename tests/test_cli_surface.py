"""The command line's edges: exit codes, signals, closed pipes, output files,
target names, strict JSON and configs, verify/attention/targets/mask refusals."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mcsa
from firmware_model.profiles import build_named, load_profiles
from mcsa.core import jsonio
from mcsa.cli import main
from mcsa.cli.common import atomic_output, load_config, resolve_profile

from .conftest import GOLDEN

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
GOOD_CASE = json.loads(gzip.open(GOLDEN / "attention.jsonl.gz", "rt").readline())


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def refused(result, *fragments):
    """Exit 2, one Error line naming every fragment, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "Aborted" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


# --- exit codes -------------------------------------------------------------------------------------------


def test_exit_codes_are_documented_in_help_and_readme():
    text = run("--help").output
    readme = (ROOT / "README.md").read_text()
    for code in ("0", "1", "2", "70", "130", "141"):
        assert re.search(rf"^\s+{code}\s+\S", text, re.M), code
        assert f"| {code} |" in readme, code


def test_an_internal_error_is_one_line_and_exit_70(monkeypatch):
    import firmware_model.profiles as profiles

    def broken(*args):
        raise RuntimeError("something inside")

    monkeypatch.setattr(profiles, "load_profiles", broken)
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 70 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "internal error: RuntimeError: something inside (a bug in mcsa: please report it with the command line)"]


def _bin_trace(path: Path, copies: int) -> Path:
    path.write_bytes((EXAMPLES / "trace.bin").read_bytes() * copies)
    return path


def _mcsa(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", "from mcsa.cli import main; main()", *map(str, args)],
                            env=env, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("args, code", [
    (["mask", "--seq-len", 10, "--target", "foo"], 2),
    (["replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128], 0),
    (["fit", "--target", "stm32f411", "--seq-len", 256, "--partitions", 4, "--dim", 32], 1),
])
def test_an_unwritable_stderr_keeps_the_runs_own_exit_code(args, code):
    """stderr on a full disk turned every run into exit 1 (the verdict code), a bad option included."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", "from mcsa.cli import main; main()", *map(str, args)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=full,
                              timeout=120)
    assert proc.returncode == code


@pytest.mark.parametrize("args", [["targets"], ["mask", "--seq-len", 8],
                                  ["replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128]])
def test_a_full_disk_under_stdout_names_stdout(args):
    """`mcsa targets > /dev/full` said only "No space left on device"."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", "from mcsa.cli import main; main()", *map(str, args)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=full, stderr=subprocess.PIPE,
                              timeout=120, text=True)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == "Error: stdout: No space left on device"


def test_a_storage_url_that_cannot_be_reached_names_o():
    result = run("replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128, "-o",
                 "ftp://no-such-host.invalid/out/")
    assert result.exit_code == 2 and result.stderr.startswith("Error: -o ftp://no-such-host.invalid/out/: ")


def test_a_symlink_loop_given_as_an_input_is_named_as_one(tmp_path):
    """click called it a file that does not exist."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    loop = tmp_path / "a"
    for args, where in ((["replay", loop, "--target", "stm32f411", "--seq-len", 8], "'TRACES...'"),
                        (["mask", "--seq-len", 8, "--config", loop], "'--config'"),
                        (["targets", "--profiles", loop], "'--profiles'")):
        refused(run(*args), f"Invalid value for {where}: '{loop}': Too many levels of symbolic links (a symlink loop)")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_closed_stdout_ends_quietly_with_141(tmp_path, fmt, unbuffered):
    """Under PYTHONUNBUFFERED a CSV of 20,000 records, one write, went to a reader that had
    left in one partial raw write, the rest dropped without an error: exit 0."""
    trace = _bin_trace(tmp_path / "t.bin", 50)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": unbuffered}
    proc = subprocess.Popen([sys.executable, "-c", "from mcsa.cli import main; main()", "replay", str(trace),
                             "--target", "stm32f411", "--seq-len", "128", "--format", fmt], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert first.split()[0] in (b'{"schema_version":', b"index,t,seq_len,target_density,sparse,density,num_positions,"
                                b"flops_ratio,partitions,boundary_tokens,build_mask_peak_bytes,attention_peak_bytes,"
                                b"step_peak_bytes,mask_bytes,fits,panic", b"index")
    assert proc.returncode == 141 and err == b""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupts_exit_130_and_leave_no_file(tmp_path, signum):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    trace = _bin_trace(tmp_path / "t.bin", 5000)  # 2,000,000 packets: seconds of work
    proc = _mcsa("replay", trace, "--target", "stm32f411", "--seq-len", 128, "-o", out_dir / "r.jsonl",
                 stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out_dir.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in err
    assert list(out_dir.iterdir()) == []


def test_a_signal_stops_a_batch_of_slow_steps_within_a_second(tmp_path):
    """Records of many distinct seq_lens: each new step is planned and placed (a fraction of a
    second each), so a batch of 65,536 records took 15 s to see the signal; now each step looks."""
    import random

    rng = random.Random(5)
    trace = tmp_path / "slow.jsonl"
    trace.write_text("".join(json.dumps({"lambda": rng.randrange(400), "lambda_prev": 0, "boundary_edges": 0,
                                         "boundary_concentration_q15": 0, "partition_count": rng.randrange(1, 17),
                                         "flags": 0, "seq_len": rng.randrange(64, 1500)}) + "\n"
                             for _ in range(20000)))
    proc = _mcsa("replay", trace, "--target", "stm32f411", "--seq-len", 128, "-o", tmp_path / "r.jsonl",
                 stdout=subprocess.DEVNULL)
    time.sleep(4)  # imports, then steps
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err
    assert time.monotonic() - sent < 2, time.monotonic() - sent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.jsonl"]


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: the SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # (it ended)
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("wait", [0.0, 0.05, 0.3])
def test_a_signal_while_the_command_starts_is_exit_130(signum, wait):
    """From the moment the ``mcsa`` entry point catches signals (its first act, before
    NumPy, Numba or the command load), a signal ends the run with 130, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mcsa", "replay", EXAMPLES / "trace.jsonl", "--target",
                             "stm32f411", "--seq-len", "128"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(wait)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err, err


def test_a_signal_while_the_outputs_go_in_place_leaves_them_all_and_exit_0(tmp_path, monkeypatch):
    """Outputs go in place together at the end: a signal between two of them neither
    stops the run half-committed nor turns its exit into 130 with files in place."""
    real_replace, sent = os.replace, []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGTERM))  # right after the first output is in place

    monkeypatch.setattr(os, "replace", replace_then_signal)
    result = CliRunner().invoke(main, ["replay", str(EXAMPLES / "trace.jsonl"), "--target", "stm32f411",
                                       "--seq-len", "128", "-o", str(tmp_path / "r.jsonl"),
                                       "--summary", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "s.jsonl"]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 402


@pytest.mark.parametrize("output", ["-o", "--summary"])
def test_an_output_fifo_nobody_reads_does_not_hold_the_first_signal(tmp_path, output):
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    others = ["-o", tmp_path / "r.jsonl"] if output == "--summary" else []
    proc = _mcsa("replay", EXAMPLES / "trace.jsonl", "--target", "stm32f411", "--seq-len", 128, output, fifo,
                 *others, stdout=subprocess.DEVNULL)
    time.sleep(3)  # imports, then the open() that waits for a reader
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and b"Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_long_plan_scan_stops_at_the_first_signal(signum):
    """A 16 MiB newlib heap placed at every undecided seq_len up to 65,536 takes tens of
    seconds: the first Ctrl-C or SIGTERM ends it (130, no table), not the end of the scan."""
    import psutil

    proc = _mcsa("plan", "--target", "x86_64", "--allocator", "newlib", "--heap-budget", "16M", "--dim", 32,
                 "--partitions", 4, stdout=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and sum(watched.cpu_times()[:2]) < 4:
        time.sleep(0.05)  # imports and the bounds take about 1.5 s of CPU: past 4 s, steps are being placed
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signum)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in err and out == b""
    assert time.monotonic() - sent < 10


# --- output files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_output_files_get_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_output(str(tmp_path / "o.txt")) as out:
            out.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "o.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_existing_output_keeps_its_mode(tmp_path):
    path = tmp_path / "o.txt"
    path.write_text("old")
    path.chmod(0o640)
    with atomic_output(str(path)) as out:
        out.write("new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640


def test_output_is_written_through_a_symlink(tmp_path):
    real = tmp_path / "data" / "out.npy"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    qkv = _qkv(tmp_path, 8, 4)
    result = run("attention", *qkv, "--dim", 4, "--scale", 0.5, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert np.load(real).dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "k.npy", "link.npy", "q.npy", "v.npy"]


def test_a_missing_output_folder_is_named_as_the_user_wrote_it(tmp_path):
    qkv = _qkv(tmp_path, 8, 4)
    result = run("attention", *qkv, "--dim", 4, "--scale", 0.5, "-o", tmp_path / "nowhere" / "out.npy")
    message = refused(result, f"{tmp_path / 'nowhere' / 'out.npy'}: No such file or directory")
    assert ".tmp" not in message


def test_no_temp_file_survives_a_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(str(tmp_path / "o.txt")) as out:
            out.write("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# --- targets ----------------------------------------------------------------------------------------------


def test_one_resolver_for_presets_and_profiles():
    preset = build_named("thumbv7em-debug")
    assert (preset.target, preset.build) == (mcsa.PRESETS["thumbv7em-debug"], "debug")
    assert preset.profile.allocator.name == "none" and preset.profile.heap_budget == 2**32 - 1
    r = build_named("stm32f411-debug")
    assert r.profile.name == "stm32f411" and r.build == "debug" and r.target.overflow is mcsa.Overflow.PANIC
    assert build_named("stm32f411").target.name == "stm32f411-release"
    assert build_named("x86_64-release").target == mcsa.PRESETS["x86_64-release"]
    with pytest.raises(ValueError, match=r"^unknown target 'avr'; no target has a close name \(`mcsa targets`"):
        build_named("avr")
    with pytest.raises(TypeError, match="target must be a name"):
        build_named(32)


def test_the_resolver_reads_user_profiles(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text(_profile_row())
    r = build_named("board-debug", own)
    assert r.profile.name == "board" and r.build == "debug" and r.target.name == "board-debug"
    assert r.target.usize_bits == 32 and r.target.overflow is mcsa.Overflow.PANIC
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 24, "--target", "board-debug",
                 "--profiles", own)
    assert result.exit_code == 0 and result.output.startswith("board-debug: seq_len 24")


def test_commands_that_size_a_heap_take_a_bare_preset_as_its_whole_address_space():
    profile, build = resolve_profile("thumbv7em-debug", None)
    assert (profile.name, build, profile.allocator.name, profile.heap_budget) == ("thumbv7em", "debug", "none",
                                                                                  2**32 - 1)
    result = run("fit", "--target", "thumbv7em", "--seq-len", 64, "--partitions", 4, "--dim", 32)
    assert result.exit_code == 0 and "thumbv7em-release" in result.output, result.output


@pytest.mark.parametrize("name", ["thumbv7em-debug", "stm32f411-debug", "rp2040", "wasm32-release"])
def test_mask_takes_presets_and_profiles(name):
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 24, "--target", name)
    assert result.exit_code == 0 and "72 positions" not in result.output and "positions" in result.output


def _profile_row(**change):
    row = {"description": '"x"', "arch": '"thumbv7em"', "usize_bits": 32, "ram": 4096, "heap_budget": 2048,
           "fpu": '"none"', "expf": '"libm-rs"', "allocator": '"tlsf"', "source": '"me"'}
    row.update(change)
    return "[board]\n" + "".join(f"{k} = {v}\n" for k, v in row.items() if v is not None)


@pytest.mark.parametrize("row,message", [
    (_profile_row(regions=5), r"mine.toml: \[board\] regions must be a table of region sizes in bytes, got 5"),
    (_profile_row(regions='{ a = "x" }'), r"mine.toml: \[board\] regions.a 'x' is not a size in bytes \(65536, 64K"),
    (_profile_row(regions="{ a = 8192 }"), r"mine.toml: \[board\] regions.a must be a size in bytes from 0 to ram"),
    (_profile_row(heap_budget=8192), r"mine.toml: \[board\] heap_budget 8,192 B is larger than its ram \(4,096 B\)"),
    (_profile_row(regions="{ a = 1024 }", heap_region='"a"'), r"heap_budget 2,048 B is larger than its heap_region a"),
    (_profile_row(heap_region=3), r"heap_region must be the name of one of its regions, got 3"),
    (_profile_row(heap_region=["a"]), r"heap_region must be the name of one of its regions"),
    (_profile_row(usize_bits=32, ram=1 << 32, heap_budget=1 << 32),
     r"\[board\] heap_budget must be in 0..=4294967295 \(a heap on a 32-bit target\), got 4294967296"),
    (_profile_row(allocator='"freertos-heap4"', heap_budget=12),
     r"\[board\] heap_budget 12 B is too small for the freertos-heap4 allocator, which needs at least 16 B"),
    (_profile_row(description=5), r"\[board\] description must be a string, got 5"),
    (_profile_row(ram=2**40), r"ram 1,099,511,627,776 B is more than a 32-bit usize addresses"),
    (_profile_row(ram=-1), r"\[board\] ram must be >= 0, got -1"),
    (_profile_row(arch='"banana"'), r"\[board\] arch must be one of x86_64, wasm32, thumbv7em, .*, got 'banana'$"),
    (_profile_row(arch='"thumbv7"'), r"got 'thumbv7' \(did you mean 'thumbv7m'\?\)"),
    (_profile_row(fpu='"yes"'), r"fpu must be one of none, single, double, got 'yes'"),
    (_profile_row(expf='"glibc"'), r"expf must be one of glibc-fma, musl, libm-rs, got 'glibc' \(did you mean"),
    (_profile_row(allocator='"tlfs"'), r"allocator must be one of none, linked-list"),
    (_profile_row(nan='"arm"'), r"nan must be one of x86-sse, .*, xtensa-fpu, got 'arm'"),
    (_profile_row(usize_bits=16), r"usize_bits 16 does not match arch thumbv7em, a 32-bit target: give "
                                  r"usize_bits = 32, or another arch"),
    (_profile_row(usize_bits=64), r"\[board\] usize_bits 64 does not match arch thumbv7em, a 32-bit target"),
    (_profile_row(arch='"x86_64"'), r"\[board\] usize_bits 32 does not match arch x86_64, a 64-bit target"),
    (_profile_row(allocater='"tlsf"'), r"\[board\]: unknown key `allocater`; did you mean `allocator`\?"),
    (_profile_row(arch=None), r"\[board\] is missing arch \(a new profile gives arch, ram, heap_budget, allocator;"),
])
def test_profile_rows_are_validated(tmp_path, row, message):
    own = tmp_path / "mine.toml"
    own.write_text(row)
    with pytest.raises(ValueError, match=message):
        load_profiles(own)
    refused(run("targets", "--profiles", own), "mine.toml: [board]")


def test_targets_rows_are_aligned():
    lines = run("targets").output.split("\n\n")[0].splitlines()
    header = lines[0]
    for column in ("ram", "heap_budget", "allocator", "description"):
        start = header.index(column)
        end = start + len(column)
        for line in lines[1:]:
            if column in ("ram", "heap_budget"):  # right-aligned sizes end under their header
                assert line[end - 1] == "B" and line[end] == " ", (column, line)
            else:  # left-aligned text starts under its header
                assert line[start - 1] == " " and line[start] != " ", (column, line)


# --- configs and strict JSON ------------------------------------------------------------------------------


def test_a_partial_config_is_merged_over_rusts_defaults(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"max_cross_partition_edges": 5}')
    assert load_config(str(cfg)) == mcsa.SparsityConfig(max_cross_partition_edges=5)
    toml = tmp_path / "cfg.toml"
    toml.write_text("boundary_cross_attention = false\n")
    assert load_config(str(toml)) == mcsa.SparsityConfig(boundary_cross_attention=False)
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 24, "--config", toml)
    assert result.exit_code == 0 and "108 positions" in result.output  # intra only: 3 * (8 * 9 / 2)


def test_an_unknown_config_key_is_ignored_with_a_guess(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"max_cross_partition_edge": 5, "colour": 1}')
    result = run("mask", "--lambda", 100, "--partitions", 3, "--seq-len", 24, "--config", cfg)
    assert result.exit_code == 0
    assert (f"note: {cfg}: unknown key `max_cross_partition_edge` ignored "
            "(did you mean `max_cross_partition_edges`?)") in result.stderr
    assert f"note: {cfg}: unknown key `colour` ignored\n" in result.stderr


@pytest.mark.parametrize("text,message", [
    ('{"min_density_q15": NaN}', "NaN is not a JSON value"),
    ('{"min_density_q15": -Infinity}', "-Infinity is not a JSON value"),
    ('{"min_density_q15": 1e400}', "number 1e400 is out of range"),
    ('{"min_density_q15": ' + "9" * 5000 + "}", "integer literal of 5,000 digits is out of range"),
    ('{"min_density_q15": 1, "min_density_q15": 2}', "duplicate field `min_density_q15`"),
    ("[" * 1000 + "]" * 1000, "nested deeper than 128 levels"),
    ('{"min_density_q15": 1', "not JSON (Expecting"),
    ('{"min_density_q15": 70000}', "min_density_q15 must be in 0..=65535"),
    ("[1]", "a config must be a JSON object or TOML table, got list"),
])
def test_configs_are_strict_json(tmp_path, text, message):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    refused(run("mask", "--lambda", 1, "--partitions", 2, "--seq-len", 8, "--config", cfg), f"{cfg}: ", message)


def test_strict_json_accepts_what_serde_accepts():
    assert jsonio.loads('{"a": [1, -2.5e3, "x\\"]", null, true], "b": {}}', "w") == {
        "a": [1, -2500.0, 'x"]', None, True], "b": {}}
    assert jsonio.loads("[" * 128 + "]" * 128, "w") == eval("[" * 128 + "]" * 128)
    assert jsonio.loads('["3e123", "e+0001", 1e-400, 1e308, -1.5E+2, ' + "9" * 40 + "]", "w") == [
        "3e123", "e+0001", 0.0, 1e308, -150.0, int("9" * 40)]
    for text, message in [("[1e309]", "number 1e309 is out of range"), ("[-1E+999]", "number -1E+999 is out"),
                          ("[" + "1" * 41 + "]", "integer literal of 41 digits"),
                          ("[1." + "0" * 500 + "1e400]", "number 1.000")]:
        with pytest.raises(ValueError, match=re.escape(f"w: not JSON ({message}")):
            jsonio.loads(text, "w")


# --- verify -----------------------------------------------------------------------------------------------


def _vectors(tmp_path, *cases, name="attention-mine.jsonl", gz=False):
    path = tmp_path / (name + (".gz" if gz else ""))
    text = "".join((c if isinstance(c, str) else json.dumps(c)) + "\n" for c in cases)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def test_verify_help_example_works():
    example = re.search(r"^\s+(mcsa verify .*)$", run("verify", "--help").output, re.M).group(1).split()
    result = run(*[str(ROOT / a) if a.startswith("tests/") else a for a in example[1:]])
    assert result.exit_code == 0 and "3,000 density cases, 0 mismatches" in result.output


@pytest.mark.parametrize("change,message", [
    ({"data": None}, "data must be a spec string"),
    ({"data": "c1,2,300"}, "bad data spec 'c1,2,300'"),
    ({"data": "r-1"}, "bad data spec 'r-1'"),
    ({"data": "r" + "9" * 30}, "bad data spec"),
    ({"dim": -1}, "dim must be in 0..="),
    ({"dim": 1.5}, "dim must be an integer, got float"),
    ({"qkv_seq_len": 2**40}, "elements, over the limit of 67,108,864 per array"),
    ({"qkv_seq_len": 2**64}, "qkv_seq_len must be in 0..=18446744073709551615"),
    ({"mask_seq_len": "big"}, "mask_seq_len must be an integer, got str"),
    ({"gate": None}, "gate packet must be a JSON object"),
    ({"scale": [1, 2]}, "scale"),
    ({"results": []}, "results must map each build"),
])
def test_verify_refuses_malformed_cases_with_file_and_line(tmp_path, change, message):
    path = _vectors(tmp_path, GOOD_CASE, {**GOOD_CASE, **change})
    refused(run("verify", path, "--build", "x86_64-release"), f"{path}:2: ", message)


def test_verify_missing_field_and_build(tmp_path):
    path = _vectors(tmp_path, {k: v for k, v in GOOD_CASE.items() if k != "dim"})
    refused(run("verify", path, "--build", "x86_64-release"), f"{path}:1: missing field 'dim'")
    path = _vectors(tmp_path, GOOD_CASE)
    refused(run("verify", path, "--build", "thumbv7em-release"),
            f"{path}:1: no result for build 'thumbv7em-release' (it holds x86_64-release, x86_64-debug")


@pytest.mark.parametrize("content,message", [
    *((content, "no cases, nothing verified") for content in ("", "\n\n")),
    ("[1]", ":1: a case must be a JSON object, got list"),
    ('{"a": NaN}', ":1: not JSON (NaN is not a JSON value)"),
    ("\xff", ":1: not UTF-8"),
])
def test_verify_refuses_empty_and_bad_files(tmp_path, content, message):
    path = tmp_path / "density-x.jsonl"
    path.write_bytes(content.encode("latin-1"))
    refused(run("verify", path, "--build", "x86_64-release"), f"{path}", message)


def test_verify_truncated_gzip_names_the_line(tmp_path):
    full = (GOLDEN / "density.jsonl.gz").read_bytes()
    path = tmp_path / "density-cut.jsonl.gz"
    path.write_bytes(full[:3000])
    message = refused(run("verify", path, "--build", "x86_64-release"), f"{path}:", "truncated or corrupt gzip")
    assert re.search(r"cut.jsonl.gz:\d+: ", message)
    path.write_bytes(b"\x1f\x8b garbage")
    refused(run("verify", path, "--build", "x86_64-release"), f"{path}:1: truncated or corrupt gzip")


def test_verify_mismatch_names_the_element_and_an_integer_ulp_distance(tmp_path):
    case = json.loads(json.dumps(GOOD_CASE))
    output = case["results"]["x86_64-release"]["output"]
    output[5] = f"{int(output[5], 16) + 2:08x}"
    output[9] = f"{int(output[9], 16) - 7:08x}"
    path = _vectors(tmp_path, case)
    result = run("verify", path, "--build", "x86_64-release")
    assert result.exit_code == 1
    assert "1 attention case, 1 mismatch " in result.output
    assert re.search(r"output\[5\]: expected \"\w{8}\", got \"\w{8}\" \(2 ULPs apart\); 2 of 1,024 elements differ, "
                     r"the farthest 7 ULPs apart at \[9\]", result.output), result.output


# --- attention and option bounds --------------------------------------------------------------------------


def _qkv(tmp_path, seq_len, dim, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for name in "qkv":
        np.save(tmp_path / f"{name}.npy", rng.integers(-50, 50, seq_len * dim).astype(np.int8))
        paths += [f"--{name}", tmp_path / f"{name}.npy"]
    return paths


def test_attention_refuses_bad_arrays_naming_the_option(tmp_path):
    qkv = _qkv(tmp_path, 8, 4)
    np.savez(tmp_path / "qkv.npz", q=np.zeros(32, np.int8))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY junk")
    np.save(tmp_path / "odd.npy", np.zeros(30, np.int8))
    for bad, message in [("qkv.npz", "an .npz archive"), ("empty.npy", "cannot read as .npy"),
                         ("junk.npy", "cannot read as .npy"), ("odd.npy", "30 elements is not a multiple of --dim 4")]:
        args = list(qkv)
        args[3] = tmp_path / bad
        refused(run("attention", *args, "--dim", 4, "--scale", 0.5), "--k", bad, message)


def test_attention_reports_an_integer_ulp_error(tmp_path):
    result = run("attention", *_qkv(tmp_path, 32, 16), "--dim", 16, "--scale", 0.25)
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and type(report["max_ulp_error"]) is int and report["max_ulp_error"] >= 0


@pytest.mark.parametrize("args,message", [
    (["attention", "--dim", 10**30], "--dim"),
    (["attention", "--dim", 4, "--scale", "nan"], "--scale nan is not a finite f32"),
    (["attention", "--dim", 4, "--scale", 1e39], "is not a finite f32"),
    (["attention", "--dim", 4, "--gate", "{"], "--gate: not JSON"),
    (["attention", "--dim", 4, "--gate", '{"lambda": 1, "flags": 70000}'], "--gate: flags must be in 0..=65535"),
    (["attention", "--dim", 4, "--gate", "[1]"], "--gate: a gate packet is a JSON object, got list"),
    (["attention", "--dim", 4, "--gate", "[" * 500 + "]" * 500], "--gate: not JSON (nested deeper"),
    (["attention", "--dim", 4, "--target", "avr"], "unknown target 'avr'"),
    (["mask", "--lambda", 1, "--partitions", 2, "--seq-len", 2**64], "--seq-len"),
    (["mask", "--lambda", 1, "--partitions", 2, "--seq-len", 2**33, "--target", "thumbv7em-release"],
     "--seq-len 8,589,934,592 is over 4,294,967,295, the largest usize on thumbv7em-release"),
    (["mask", "--lambda", 1, "--partitions", 2, "--seq-len", 8, "--position-limit", 2**60], "--position-limit"),
    (["mask", "--lambda", 2**32, "--partitions", 2, "--seq-len", 8], "--lambda"),
])
def test_options_are_bounded(tmp_path, args, message):
    if args[0] == "attention":
        args = [*args, *_qkv(tmp_path, 8, 4)]
        if "--scale" not in args:
            args += ["--scale", 0.5]
    refused(run(*args), message)


def test_mask_png_axes_count_tokens(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcsa.cli.inspect import mask_figure

    sim = mcsa.MincutSparseAttention()
    m = sim.build_mask(mcsa.GatePacket(lambda_=100, partition_count=8), 4096)
    fig = mask_figure(plt, m.positions, m.partition_boundaries, 4096, "t")
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 4096.0) and ax.get_ylim() == (4096.0, 0.0)
    assert "token" in ax.get_xlabel()
    plt.close(fig)


def test_an_npy_header_promising_a_terabyte_is_refused_without_allocating(tmp_path):
    qkv = _qkv(tmp_path, 8, 4)
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|i1", "fortran_order": False, "shape": (2**40,)})
        f.write(bytes(100))
    qkv[1] = tmp_path / "huge.npy"
    refused(run("attention", *qkv, "--dim", 4, "--scale", 0.5), "--q", "huge.npy: cannot read as .npy")


def test_files_that_are_not_utf8_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"a = 1\n\xff")
    refused(run("mask", "--lambda", 1, "--partitions", 2, "--seq-len", 8, "--config", bad),
            f"{bad}: not UTF-8 (byte 6)")
    refused(run("targets", "--profiles", bad), f"{bad}: not UTF-8 (byte 6)")


def test_an_unknown_gate_key_is_ignored_with_a_guess(tmp_path):
    gate = {"lambda": 100, "lambda_prev": 100, "boundary_edges": 0, "boundary_concentration_q15": 0,
            "partition_count": 4, "flags": 0, "partition_cont": 3}
    result = run("attention", *_qkv(tmp_path, 8, 4), "--dim", 4, "--scale", 0.5, "--gate", json.dumps(gate))
    assert result.exit_code == 0
    assert "note: --gate: unknown key `partition_cont` ignored (did you mean `partition_count`?)" in result.stderr


def test_a_target_panic_in_fit_is_a_verdict_not_a_traceback():
    result = run("fit", "--target", "stm32f411", "--seq-len", 30000, "--partitions", 1, "--dim", 32)
    assert result.exit_code == 1 and "capacity overflow" in result.output and "Traceback" not in result.output


def test_endless_inputs_are_bounded(tmp_path):
    refused(run("mask", "--lambda", 1, "--partitions", 2, "--seq-len", 8, "--config", "/dev/zero"),
            "/dev/zero: larger than 1,048,576 bytes")
    refused(run("targets", "--profiles", "/dev/zero"), "/dev/zero: larger than 1,048,576 bytes")
    from mcsa.app import verify as vectors

    path = tmp_path / "density-long.jsonl"
    path.write_bytes(b" " * 100 + b"\n")
    old, vectors.LINE_LIMIT = vectors.LINE_LIMIT, 64
    try:
        refused(run("verify", path, "--build", "x86_64-release"), f"{path}:1: line longer than 64 bytes")
    finally:
        vectors.LINE_LIMIT = old


def test_output_into_a_device_or_fifo_is_written_not_replaced(tmp_path):
    with atomic_output("/dev/null", "wb") as out:
        out.write(b"gone")
    assert Path("/dev/null").is_char_device()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    with atomic_output(str(fifo)) as out:
        out.write("through the fifo\n")
    assert reader.communicate(timeout=30)[0] == b"through the fifo\n"
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
