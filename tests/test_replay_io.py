"""What replay reads and writes: streams read like stdin, trace formats told by their
content, no output ever an input or another output, outputs refused before work as a
shell redirection would refuse them, storage errors that name their path, options
checked as options, and a person's view (a table that fits, plain summaries, a plot)."""

import errno
import gzip
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mcsa.app import fleet
from mcsa.app.replay import replay_table
from mcsa.app.traces import open_trace
from mcsa.cli import main

from .conftest import on_terminal

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32"]
FORMATS = ["trace.jsonl", "trace.csv", "trace.bin", "trace.jsonl.gz"]


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, input=input)


def mcsa(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "mcsa", *map(str, args)], capture_output=True, timeout=120,
                          **kwargs)


def refused(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"index"')]


def reference(name):
    """The records of an example trace named as it is, without ``t`` (binary has none)."""
    rows = records(run("replay", EXAMPLES / name, *ARGS, "--format", "jsonl").stdout)
    assert len(rows) == 400
    return [{k: v for k, v in r.items() if k != "t"} for r in rows]


def untimed(rows):
    return [{k: v for k, v in r.items() if k != "t"} for r in rows]


# --- streams as inputs (issue 19.4) --------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("fifo_name", ["named", "plain"])
def test_a_fifo_is_read_like_stdin(tmp_path, name, fifo_name):
    """A FIFO, whether its name tells the format or not, for every format (gzip too)."""
    fifo = tmp_path / (name if fifo_name == "named" else "pipe")
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes((EXAMPLES / name).read_bytes()))
    feeder.start()
    result = run("replay", fifo, *ARGS, "--format", "jsonl")
    feeder.join(10)
    assert result.exit_code == 0, result.output
    assert untimed(records(result.stdout)) == reference("trace.jsonl")


@pytest.mark.parametrize("name", FORMATS)
def test_dev_stdin_and_process_substitution_are_read_like_stdin(name):
    trace = EXAMPLES / name
    with open(trace, "rb") as piped:
        via_stdin = mcsa("replay", "/dev/stdin", *ARGS, "--format", "jsonl", stdin=piped)
    assert via_stdin.returncode == 0, via_stdin.stderr
    assert untimed(records(via_stdin.stdout.decode())) == reference("trace.jsonl")
    command = f"{sys.executable} -m mcsa replay <(cat {trace}) {' '.join(ARGS)} --format jsonl"
    substituted = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120)
    assert substituted.returncode == 0, substituted.stderr
    assert untimed(records(substituted.stdout.decode())) == reference("trace.jsonl")


def test_a_failing_stream_is_named_and_dev_null_is_not_blamed():
    command = (f"{sys.executable} -m mcsa replay <(printf '{{\"lambda\": 1}}\\n') {' '.join(ARGS)} "
               "-o /dev/null")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "/dev/null" not in result.stderr, result.stderr
    assert "Error: /dev/fd/" in result.stderr and ":1: " in result.stderr and "missing" in result.stderr


# --- formats told by the content (issue 16.1) ----------------------------------------------------------


@pytest.mark.parametrize("name, content, says", [
    ("x.bin", "trace.jsonl", "its extension .bin names binary packets, but the content looks like JSON Lines"),
    ("x.jsonl", "trace.bin", "its extension .jsonl names JSON Lines, but the content looks like binary packets"),
    ("x.jsonl", "trace.csv", "its extension .jsonl names JSON Lines, but the content looks like CSV"),
    ("x.csv", "trace.jsonl", "its extension .csv names CSV, but the content looks like JSON Lines"),
    ("x.jsonl.gz", "trace.jsonl", "its extension .gz names a gzip file, but the content is not gzip-compressed"),
    ("x.csv.gz", "trace.bin.gz", "its extension .csv.gz names CSV, but the content looks like binary packets"),
])
def test_a_name_that_contradicts_the_content_is_refused(tmp_path, name, content, says):
    """A JSONL file named x.bin replayed as 3,446 nonsense packets; now it is refused,
    before any record, saying what the content looks like; so is an --input-format
    that says otherwise."""
    path = tmp_path / name
    path.write_bytes((EXAMPLES / content).read_bytes() if (EXAMPLES / content).exists()
                     else gzip.compress((EXAMPLES / content.removesuffix(".gz")).read_bytes()))
    out = tmp_path / "o.jsonl"
    refused(run("replay", path, *ARGS, "-o", out), f"{path}: {says}")
    assert not out.exists()
    if not name.endswith(".gz"):
        other = {"x.bin": "bin", "x.csv": "csv"}.get(name, "jsonl")
        refused(run("replay", path, *ARGS, "--input-format", other, "-o", out), f"--input-format {other} names")


def test_the_content_decides_where_the_name_says_nothing(tmp_path):
    """A gzipped JSONL file named .jsonl (it said "not UTF-8 text"), a trace with no extension."""
    gzipped = tmp_path / "t.jsonl"
    gzipped.write_bytes(gzip.compress((EXAMPLES / "trace.jsonl").read_bytes()))
    bare = tmp_path / "trace"
    bare.write_bytes((EXAMPLES / "trace.csv").read_bytes())
    for path in (gzipped, bare):
        result = run("replay", path, *ARGS, "--format", "jsonl")
        assert result.exit_code == 0, result.output
        assert untimed(records(result.stdout)) == reference("trace.jsonl")
    prose = tmp_path / "notes"
    prose.write_text("a trace? no: a note\n")
    refused(run("replay", prose, *ARGS), "cannot tell the trace format", "give --input-format")
    refused(run("replay", "-", *ARGS, input="some words\n"), "-: cannot tell the trace format")


def test_a_binary_trace_of_a_size_no_packet_divides_is_refused_before_any_record(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes((EXAMPLES / "trace.bin").read_bytes() + b"\x01\x02\x03")
    out = tmp_path / "o.jsonl"
    refused(run("replay", path, *ARGS, "-o", out), f"{path}: byte 6400: incomplete record (3 of 16 bytes)",
            "refused before any record")
    assert not out.exists()
    skipped = run("replay", path, *ARGS, "--format", "jsonl", "--skip-bad")
    assert skipped.exit_code == 0 and len(records(skipped.stdout)) == 400
    assert "skipped: " in skipped.stderr and "1 bad record skipped" in skipped.stderr


def test_a_parquet_file_given_as_a_trace_is_no_binary_trace(tmp_path):
    out = tmp_path / "o.parquet"
    assert run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", out).exit_code == 0
    refused(run("replay", out, *ARGS, "--format", "jsonl"), f"{out}: cannot tell the trace format")


@pytest.mark.parametrize("kind, head", [
    ("a NumPy array (.npy)", b"\x93NUMPY\x01\x00v\x00"), ("a zip archive (.npz, .zip)", b"PK\x03\x04\x14\x00\x00\x00"),
    ("a PNG image", b"\x89PNG\r\n\x1a\n"), ("a GGUF model", b"GGUF\x03\x00\x00\x00"),
])
def test_files_users_keep_beside_traces_are_not_read_as_packets(tmp_path, kind, head):
    """Any file of 16-byte multiples would replay as binary packets: known magic numbers
    are refused unless a name or --input-format says bin (a packet may begin with any bytes)."""
    data = head + bytes(16 * 40 - len(head))
    stray = tmp_path / "k.npy"
    stray.write_bytes(data)
    refused(run("replay", stray, *ARGS, "--format", "jsonl"), f"{stray}: cannot tell the trace format: the content "
            f"is {kind}, not a trace")
    refused(run("replay", "-", *ARGS, "--format", "jsonl", input=data), "-: cannot tell the trace format")
    named = tmp_path / "k.bin"
    named.write_bytes(data)
    for given in ([named], [stray, "--input-format", "bin"]):
        assert len(records(run("replay", *given, *ARGS, "--format", "jsonl").stdout)) == 40


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_text_is_refused_as_such_not_replayed_as_packets(tmp_path, encoding):
    """JSON Lines saved by Windows PowerShell (UTF-16 with a byte-order mark) replayed as
    129 "packets" from 8 lines, exit 0, where its name said nothing."""
    lines = (EXAMPLES / "trace.jsonl").read_text().splitlines()[:8]
    text = "".join(line + "\r\n" for line in lines)
    data = ("\ufeff" if encoding == "utf-16-be" else "").encode(encoding) + text.encode(encoding)
    data += bytes(-len(data) % 16)
    for name in ("ps.txt", "ps.jsonl"):
        (tmp_path / name).write_bytes(data)
        refused(run("replay", tmp_path / name, *ARGS), f"{tmp_path / name}: the content is UTF-16 text", "save it as UTF-8")
    refused(run("replay", "-", *ARGS, input=data), "-: the content is UTF-16 text")
    named = tmp_path / "ps.bin"  # (a packet may begin with a byte-order mark: a bin name is trusted; was exit 70)
    named.write_bytes(data)
    assert run("replay", named, *ARGS, "--format", "jsonl").exit_code == 0
    assert run("replay", tmp_path / "ps.txt", *ARGS, "--input-format", "bin", "--format", "jsonl").exit_code == 0


# --- no input is ever an output (issue 16.1) -----------------------------------------------------------


def test_no_output_is_an_input_or_another_output(tmp_path):
    trace = tmp_path / "mine.jsonl"
    trace.write_bytes((EXAMPLES / "trace.jsonl").read_bytes())
    binary = tmp_path / "mine.bin"
    binary.write_bytes((EXAMPLES / "trace.bin").read_bytes())
    (tmp_path / "link.jsonl").symlink_to(trace)
    os.link(trace, tmp_path / "hard.jsonl")
    before = {p: p.read_bytes() for p in (trace, binary)}
    for args, says in [
        (["-o", trace], f"-o {trace}: is the same file as the input {trace}"),
        (["--summary", binary], f"--summary {binary}: is the same file as the input {binary}"),
        (["-o", tmp_path / "link.jsonl"], "is the same file as the input"),
        (["-o", tmp_path / "hard.jsonl"], "is the same file as the input"),
        (["-o", tmp_path / "same.jsonl", "--summary", tmp_path / "same.jsonl"], "one output would overwrite the other"),
        (["-o", tmp_path / "out.jsonl", "--plot", tmp_path / "out.jsonl"], "one output would overwrite the other"),
        (["-o", tmp_path / "new.jsonl", "--summary", tmp_path / "link-to-new"], "one output would overwrite the other"),
    ]:
        if "link-to-new" in str(args[-1]) and not (tmp_path / "link-to-new").is_symlink():
            (tmp_path / "link-to-new").symlink_to(tmp_path / "new.jsonl")  # dangling: both name new.jsonl
        refused(run("replay", trace, binary, *ARGS, "--format", "jsonl", *args), says)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.jsonl", "link-to-new", "link.jsonl", "mine.bin",
                                                          "mine.jsonl"]


def test_stdout_appended_to_an_input_is_refused(tmp_path):
    """``mcsa replay t.jsonl >> t.jsonl`` would read what it writes for ever."""
    trace = tmp_path / "t.jsonl"
    trace.write_bytes((EXAMPLES / "trace.jsonl").read_bytes())
    with open(trace, "ab") as appended:
        result = subprocess.run([sys.executable, "-m", "mcsa", "replay", trace, *ARGS, "--format", "jsonl"],
                                stdout=appended, stderr=subprocess.PIPE, timeout=120)
    assert result.returncode == 2 and b"-o stdout: is the same file as the input" in result.stderr
    assert trace.read_bytes() == (EXAMPLES / "trace.jsonl").read_bytes()


def test_any_output_inside_the_parquet_folder_is_refused(tmp_path):
    """``--summary OUT/t5.bin.parquet`` inside -o OUT corrupted the dataset (exit 0)."""
    out = tmp_path / "OUT"
    out.mkdir()
    for summary in (out / "trace.bin.parquet", out / "s.jsonl", out / "trace.bin.parquet" / "x.jsonl"):
        refused(run("replay", EXAMPLES / "trace.jsonl", EXAMPLES / "trace.bin", *ARGS, "-o", out, "--summary",
                    summary), f"-o {out}: the folder it writes holds --summary {summary}")
    inside = out / "trace.jsonl.parquet"
    inside.mkdir()
    (inside / "t.bin").write_bytes((EXAMPLES / "trace.bin").read_bytes())
    refused(run("replay", inside / "t.bin", EXAMPLES / "trace.jsonl", *ARGS, "-o", out),
            f"Error: -o {out}, for {EXAMPLES / 'trace.jsonl'}, its folder {inside}: the folder it writes holds "
            f"the input {inside / 't.bin'}")
    assert sorted(p.name for p in out.iterdir()) == ["trace.jsonl.parquet"]
    (out / "trace.bin.parquet").write_text("mine")
    refused(run("replay", EXAMPLES / "trace.bin", *ARGS, "-o", out),
            f"Error: -o {out}, its folder {out / 'trace.bin.parquet'}: is a file, not a folder\n")
    assert (out / "trace.bin.parquet").read_text() == "mine"
    refused(run("replay", EXAMPLES / "trace.bin", EXAMPLES / "trace.bin", *ARGS, "-o", out),  # a trace given twice
            f"Error: -o {out}, for {EXAMPLES / 'trace.bin'} (trace 1), its folder {out / 'trace.bin.parquet'}: is a "
            "file, not a folder\n")


def test_outputs_are_refused_before_work_as_a_shell_redirection_would(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", loop), f"-o {loop}: Too many levels of symbolic links")
    assert loop.is_symlink()
    chain = tmp_path / "chain"
    chain.symlink_to(tmp_path / "link2")
    (tmp_path / "link2").symlink_to(tmp_path / "missing" / "out.jsonl")
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", chain), f"-o {chain}: No such file or directory")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "made.jsonl")  # as a shell would: written through, the link kept
    assert run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", dangling).exit_code == 0
    assert dangling.is_symlink() and len((tmp_path / "made.jsonl").read_text().splitlines()) == 402
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--plot", tmp_path), "is a directory")
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", f"{dangling}/"), f"-o {dangling}/: Not a directory")


# --- -o's extension names the format (issue 16.1) ------------------------------------------------------


def test_the_output_format_is_the_one_its_extension_names(tmp_path):
    """``-o guess.parquet`` wrote JSON Lines under that name."""
    for name, check in [
        ("o.parquet", lambda p: pq.read_table(p).num_rows == 400),
        ("o.csv", lambda p: p.read_text().splitlines()[0].startswith("index,t,seq_len")),
        ("o.txt", lambda p: p.read_text().split()[0] == "index"),
        ("o.jsonl", lambda p: json.loads(p.read_text().splitlines()[0])["schema_version"] == 2),
    ]:
        path = tmp_path / name
        assert run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", path).exit_code == 0
        assert check(path), name
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", tmp_path / "x.csv", "--format", "jsonl"),
            f"-o {tmp_path / 'x.csv'} names csv by its extension, --format says jsonl")
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", tmp_path / "x.json"), "a .json file is a format")
    for name in ("x.bin", "x.tsv", "x.xlsx", "x.zip", "x.bz2", "x.yaml", "x.toml", "x.html", "x.md"):
        refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", tmp_path / name),  # (x.bin was JSON Lines)
                f"-o {tmp_path / name}: a .{name[2:]} file is a format replay does not write")
    refused(run("mask", "--seq-len", 8, "-o", tmp_path / "m.tsv"), "a .tsv file, a format this command does not write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "o.jsonl", "o.parquet", "o.txt"]


# --- storage errors name the path (issue 19.7) ---------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_named_for_every_output(tmp_path, monkeypatch):
    """/dev/full for -o FILE (each format), --summary and --plot; a store that fills up
    under a Parquet folder: each names its path (it was only "No space left on device")."""
    for args in (["-o", "/dev/full"], ["-o", "/dev/full", "--format", "parquet"], ["-o", "/dev/full", "--format",
                 "csv"], ["-o", os.devnull, "--summary", "/dev/full"], ["-o", os.devnull, "--plot", "/dev/full"]):
        refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, *args), "Error: /dev/full: No space left on device")
    from fsspec.implementations.local import LocalFileSystem

    class Full(io.BytesIO):
        def write(self, data):
            _enospc()

    monkeypatch.setattr(LocalFileSystem, "_open", lambda self, path, mode="rb", **kwargs: Full())
    out = tmp_path / "ds"
    refused(run("replay", EXAMPLES / "trace.jsonl", EXAMPLES / "trace.bin", *ARGS, "-o", f"{out}/"),
            f"Error: {out}/trace.jsonl.parquet: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- options checked as options (issue 19.6) -----------------------------------------------------------


@pytest.mark.parametrize("skip_bad", [[], ["--skip-bad"]])
def test_a_budget_or_profile_problem_is_an_option_error_not_a_bad_record(tmp_path, skip_bad):
    """It was "trace.bin: byte 0: ... heap_size 7 cannot hold ...", and with --skip-bad
    exit 0 with "400 bad records skipped"."""
    refused(run("replay", EXAMPLES / "trace.bin", "--target", "freertos-m4", "--seq-len", 128, "--heap-budget", 7,
                *skip_bad), "--heap-budget 7 B is too small for the freertos-heap4 allocator")
    profiles = tmp_path / "p.toml"
    profiles.write_text('[esp64]\ndescription = "d"\nsource = "s"\narch = "x86_64"\nusize_bits = 64\n'
                        'ram = 1048576\nheap_budget = 524288\nfpu = "double"\nexpf = "glibc-fma"\n'
                        'allocator = "esp-idf"\n')
    result = run("replay", EXAMPLES / "trace.bin", "--profiles", profiles, "--target", "esp64", "--seq-len", 128,
                 *skip_bad)
    refused(result, "esp64-release cannot run any step with this configuration", "esp-idf: models 32-bit targets only")
    assert "trace.bin: byte" not in result.stderr and "skipped" not in result.stderr


# --- wide CSV headers (issue 19.8) ---------------------------------------------------------------------


def test_a_csv_header_of_100000_extra_columns_is_read_in_linear_time_with_one_note(tmp_path):
    """172 s (a quadratic duplicate check) and one note per column before. Linear now: a
    header 16 times wider (by its columns) costs about 16 times more, not 256."""
    import time

    from mcsa.app.traces import TraceReader

    def header_seconds(extra: int) -> float:
        path = tmp_path / f"w{extra}.csv"
        fields = "lambda,lambda_prev,boundary_edges,boundary_concentration_q15,partition_count,flags"
        path.write_text(fields + "".join(f",x{i}" for i in range(extra)) + "\n1,1,0,0,2,0" + ",7" * extra + "\n")
        started = time.process_time()
        assert sum(len(b) for b in TraceReader(path)) == 1
        return time.process_time() - started

    assert header_seconds(100_000) < 16 * max(header_seconds(6_250), 0.05) * 4
    path = tmp_path / "w100000.csv"
    result = run("replay", path, *ARGS, "--format", "jsonl")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert result.exit_code == 0 and len(records(result.stdout)) == 1
    assert notes == [f"note: {path}: 100,000 unknown keys ignored: `x0`, `x1`, `x10`, `x100`, `x1000`, `x10000`, "
                     "`x10001`, `x10002`, `x10003`, `x10004` and 99,990 more"]


# --- the Python API (issue 19.9) -----------------------------------------------------------------------


def test_replay_table_names_the_argument_of_a_wrong_type(monkeypatch):
    trace = str(EXAMPLES / "trace.jsonl")
    with pytest.raises(TypeError, match="profile must be a Profile"):
        replay_table(trace, None, 128)
    with pytest.raises(TypeError, match="with_packet must be a bool, got str 'False'"):
        replay_table(trace, "stm32f411", 128, with_packet="False")
    read, write = os.pipe()
    try:
        with pytest.raises(TypeError, match="profiles_file must be a path"):
            replay_table(trace, "stm32f411", 128, profiles_file=read)
        os.fstat(read)  # (not read as a file descriptor, nor closed)
    finally:
        os.close(read)
        os.close(write)
    with pytest.raises(TypeError, match="trace must be a path"):
        replay_table(0, "stm32f411", 128)
    assert replay_table(Path(trace), "stm32f411", 128, dim=32).num_rows == 400


# --- Parquet datasets anywhere fsspec writes (issue 17.3) ----------------------------------------------


def test_a_dataset_url_holds_the_same_files_as_a_local_folder(tmp_path):
    local = tmp_path / "local"
    traces = [EXAMPLES / "trace.jsonl", EXAMPLES / "trace.bin"]
    assert run("replay", *traces, *ARGS, "-o", f"{local}/").exit_code == 0
    assert run("replay", *traces, *ARGS, "-o", "memory://replayed/night").exit_code == 0
    assert run("replay", *traces, *ARGS, "-o", f"file://{tmp_path / 'viaurl'}", "--workers", 2).exit_code == 0
    memory = fsspec.filesystem("memory")
    for name in ("trace.jsonl.parquet", "trace.bin.parquet"):
        files = sorted(p.name for p in (local / name).iterdir())
        assert files == ["_common_metadata", "part-00000.parquet"]
        for file in files:
            expected = (local / name / file).read_bytes()
            assert memory.cat(f"/replayed/night/{name}/{file}") == expected
            assert (tmp_path / "viaurl" / name / file).read_bytes() == expected
    assert pq.read_table(local).num_rows == 800
    summary = json.loads(pq.read_schema(local / "trace.bin.parquet" / "_common_metadata").metadata[
        b"mcsa.replay.summary"])
    assert summary["packets"] == 400 and summary["first_over_budget_packet"] == 7


def test_a_stream_is_sent_to_the_workers_in_bounded_pieces(tmp_path, monkeypatch):
    """gzip (and stdin, a FIFO, a device) is read here a few batches at a time: no task
    holds a whole trace (a 20-million-packet .bin.gz peaked at 2 GiB on a worker)."""
    path = tmp_path / "t.bin.gz"
    path.write_bytes(gzip.compress((EXAMPLES / "trace.bin").read_bytes() * 1000, 1))
    source = open_trace(path)
    pieces = list(fleet.Fleet._trace_pieces(source, False, fleet.CHUNK_BYTES))
    assert not source.splittable and len(pieces) == 2
    assert [sum(len(b) for b in p.batches) for p in pieces] == [4 * 65536, 400_000 - 4 * 65536]


# --- a person's view (issue 16.6) ----------------------------------------------------------------------


def test_the_table_fits_100_columns_unless_wide():
    narrow = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--format", "table").stdout.splitlines()
    wide = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--format", "table", "--wide").stdout.splitlines()
    assert max(map(len, narrow)) <= 100 and len(narrow) == len(wide) == 404
    assert narrow[0].split() == ["index", "seq_len", "density", "num_positions", "step_peak_bytes", "fits", "panic"]
    assert wide[0].split() == ["index", "t", "seq_len", "target_density", "sparse", "density", "num_positions",
                               "flops_ratio", "partitions", "boundary_tokens", "build_mask_peak_bytes",
                               "attention_peak_bytes", "step_peak_bytes", "mask_bytes", "fits", "panic"]
    assert [line.split()[5] for line in narrow[1:401]] == [line.split()[14] for line in wide[1:401]]


def test_the_progress_bar_never_shares_a_line_with_records(tmp_path):
    """`mcsa replay ... | head` with a terminal on stderr put the bar among the records."""
    trace = tmp_path / "t.bin"
    trace.write_bytes((EXAMPLES / "trace.bin").read_bytes() * 200)
    said, (piped, to_file) = on_terminal(["replay", trace, *ARGS, "--format", "jsonl"],
                                         ["replay", trace, *ARGS, "-o", tmp_path / "o.jsonl"], timeout=120)
    assert piped.returncode == 0 and to_file.returncode == 0
    assert said.count(b"replaying") >= 1 and b"index" not in said  # the bar: only with the records in a file
    assert len(piped.stdout.splitlines()) == 80_002 and b"replaying" not in piped.stdout


def test_counts_plurals_empty_traces_and_all_panic_runs_are_said_plainly(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run("replay", empty, *ARGS, "--format", "jsonl")
    assert result.exit_code == 0 and "packets 0: the trace holds no packet" in result.stderr
    one = tmp_path / "one.jsonl"
    one.write_text((EXAMPLES / "trace.jsonl").read_text().splitlines()[0] + "\n{oops\n")
    result = run("replay", one, *ARGS, "--format", "jsonl", "--skip-bad", "--fail-on", "panic")
    assert "packets 1: 1 sparse, 0 full, 0 panicked, 1 bad record skipped" in result.stderr
    panics = run("replay", EXAMPLES / "trace.jsonl", *ARGS[:-2], "--dim", 0, "--format", "jsonl",
                 "--fail-on", "panic")
    assert panics.exit_code == 1 and "no heap figure: every step panicked" in panics.stderr
    assert "- B at packet -" not in panics.stderr and "failing: 400 packets panic" in panics.stderr
    debug = tmp_path / "debug.jsonl"
    debug.write_text('{"lambda":200,"lambda_prev":200,"boundary_edges":0,"boundary_concentration_q15":0,'
                     '"partition_count":1,"flags":0,"seq_len":70000}\n')
    result = run("replay", debug, "--target", "stm32f411-debug", "--seq-len", 128, "--format", "jsonl",
                 "--fail-on", "panic")
    assert result.exit_code == 1 and "no mask: every build_mask panicked" in result.stderr
    assert "failing: 1 packet panic" in result.stderr


def test_the_plot_has_a_title_units_and_a_legend_that_covers_no_data(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcsa.app.writers import replay_figure

    series = {"a/t.jsonl": {"index": list(range(400)), "density": np.linspace(0, 1, 400).tolist(),
                            "num_positions": list(range(400)), "step_peak_bytes": list(range(0, 80000, 200))}}
    fig = replay_figure(plt, series, 65536, "mcsa replay of t.jsonl")
    fig.canvas.draw()
    assert fig._suptitle.get_text() == "mcsa replay of t.jsonl"
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "bytes" in labels[2] and "positions" in labels[1] and "packet" in fig.axes[2].get_xlabel()
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["t.jsonl", "heap budget 65,536 B"]
    plt.close(fig)
    png = tmp_path / "p.png"
    assert run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", f"{tmp_path / 'ds'}/", "--plot", png).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name, piece", [("t.jsonl", False), ("t.bin", False), ("t.bin", True), ("t.jsonl", True)])
def test_a_trace_cut_while_it_is_replayed_is_named_not_cut_short_silently(tmp_path, name, piece):
    """A log truncated under a running replay ended early with exit 0 and part of its records
    (JSON Lines are read 4 MiB at a time: 200 copies of the example, 11 MB, outrun the first read)."""
    from mcsa.app.traces import TraceError, TraceReader

    path = tmp_path / name
    data = (EXAMPLES / ("trace.jsonl" if name.endswith(".jsonl") else "trace.bin")).read_bytes() * 200
    path.write_bytes(data)
    size = len(data)
    cut = data.rindex(b"\n", 0, size // 2) + 1 if name.endswith(".jsonl") else size // 2 // 16 * 16  # between records
    reader = TraceReader(str(path), batch_records=100, **({"start": 0, "end": size} if piece else {}))
    batches = iter(reader)
    assert len(next(batches)) == 100
    with open(path, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(TraceError, match=f"{path}: the file was cut from {size:,} to {cut:,} bytes while it was "
                       "replayed: the records after byte"):
        list(batches)


def test_a_dataset_folder_holding_the_users_files_is_not_replaced(tmp_path):
    """-o DIR/ replaces each trace's folder as a whole: a file of the user's in it went with it, exit 0."""
    out = tmp_path / "keep"
    assert run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", f"{out}/").exit_code == 0
    assert run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", f"{out}/").exit_code == 0  # its own files: replaced
    (out / "trace.jsonl.parquet" / "notes.txt").write_text("mine")
    refused(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", f"{out}/"),
            "trace.jsonl.parquet/ holds notes.txt, which a replay does not write")
    assert (out / "trace.jsonl.parquet" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "trace.jsonl.parquet").iterdir()) == [
        "_common_metadata", "notes.txt", "part-00000.parquet"]
