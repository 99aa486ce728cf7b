"""The columnar replay engine: every output agrees record for record, workers and byte
ranges change nothing, and every malformed record is refused at its place."""

import contextlib
import csv
import gzip
import zlib
import io
import json
import socket
import warnings
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model.profiles import load_profiles
import mcsa.app.fleet as fleet
from mcsa import MincutSparseAttention
from mcsa.app.replay import Replayer, replay_table
from mcsa.app.traces import TraceReader, byte_ranges, open_trace
from mcsa.cli import main
from mcsa.cli.common import resolve_profile
from mcsa.core.mask import raw_positions
from mcsa.core.packets import FIELDS, PACKET_DTYPE, GatePacket, SparsityConfig

from .conftest import GOLDEN

EXAMPLES = GOLDEN.parent.parent / "examples"
ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32"]
PACKET = '"lambda":200,"lambda_prev":200,"boundary_edges":0,"boundary_concentration_q15":0,"partition_count":2,"flags":0'


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, input=input)


def records(text):
    return [json.loads(line) for line in text.splitlines()][1:-1]


def replayer(**kw):
    profile, build = resolve_profile("stm32f411", None)
    return Replayer(profile, build, SparsityConfig(), 128, 32, **kw)


def packets_strategy():
    field = {"lambda": st.sampled_from([0, 29, 30, 100, 400, 2**32 - 1]), "lambda_prev": st.integers(0, 2**32 - 1),
             "boundary_edges": st.integers(0, 65535), "boundary_concentration_q15": st.integers(0, 65535),
             "partition_count": st.sampled_from([0, 1, 2, 3, 8, 65535]), "flags": st.integers(0, 65535)}
    return st.lists(st.fixed_dictionaries(field, optional={"seq_len": st.sampled_from([0, 16, 64, 100, 300]),
                                                           "t": st.floats(-1e6, 1e6)}), min_size=1, max_size=40)


def write_all(tmp_path, rows):
    """The same packets as JSONL, CSV (seq_len and t columns) and binary (no seq_len: all the default)."""
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.DictWriter(f, [*FIELDS, "seq_len", "t"], lineterminator="\n")
        w.writeheader()
        w.writerows({**{k: "" for k in ("seq_len", "t")}, **{k: repr(v) if k == "t" else v for k, v in r.items()}}
                    for r in rows)
    (tmp_path / "t.bin").write_bytes(np.array([tuple(r[k] for k in FIELDS) for r in rows], PACKET_DTYPE).tobytes())


def parquet_rows(path):
    return pq.read_table(path).to_pylist()


def same_record(text_record, parquet_record):
    for key, value in text_record.items():
        other = parquet_record[key]
        if isinstance(value, float) and key not in ("t",):
            assert np.float32(value) == np.float32(other), key
        else:
            assert value == other, key


@settings(max_examples=15, deadline=None)
@given(rows=packets_strategy())
def test_outputs_agree_record_for_record(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("t")
    write_all(tmp, rows)
    text = records(run("replay", tmp / "t.jsonl", *ARGS, "--format", "jsonl").stdout)
    assert [r["index"] for r in text] == list(range(len(rows)))
    from_csv = records(run("replay", tmp / "t.csv", *ARGS, "--format", "jsonl").stdout)
    assert from_csv == text
    csv_out = list(csv.DictReader(io.StringIO(run("replay", tmp / "t.jsonl", *ARGS, "--format", "csv").stdout)))
    assert [int(r["index"]) for r in csv_out] == list(range(len(rows)))
    assert [r["step_peak_bytes"] for r in csv_out] == ["" if r["step_peak_bytes"] is None else str(r["step_peak_bytes"])
                                                      for r in text]
    assert run("replay", tmp / "t.jsonl", *ARGS, "--format", "parquet", "--with-packet", "-o", tmp / "o.parquet").exit_code == 0
    table = parquet_rows(tmp / "o.parquet")
    for record, row, packet in zip(text, table, rows):
        same_record(record, row)
        assert all(row[k] == packet[k] for k in FIELDS)
    lines = run("replay", tmp / "t.jsonl", *ARGS, "--format", "table").stdout.splitlines()[1:len(rows) + 1]
    assert [line.split()[0] for line in lines] == [str(i) for i in range(len(rows))]
    assert [line.split()[1] for line in lines] == [str(r["seq_len"]) for r in text]


def test_record_fields_and_density_kernel_match_the_scalar_path():
    r = replayer()
    batch = next(iter(TraceReader(str(EXAMPLES / "trace.bin"))))
    part, error = r.replay_batch(batch, False)
    assert error is None
    for i, values in enumerate(batch.packets.tolist()):
        one = r.record(i, GatePacket(*values))
        assert np.float32(one["target_density"]).view(np.uint32) == part.target_density[i:i + 1].view(np.uint32)[0]
        assert part.masks[part.inverse[i]] == {k: one[k] for k in part.masks[0]}


def test_python_entry_point_returns_a_table():
    table = replay_table(str(EXAMPLES / "trace.jsonl"), "stm32f411", 128, dim=32, with_packet=True)
    assert table.num_rows == 400 and table.schema.field("target_density").type == "float"
    text = records(run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--format", "jsonl").stdout)
    assert [r["step_peak_bytes"] for r in text] == table.column("step_peak_bytes").to_pylist()
    assert table.column("lambda")[0].as_py() == 122


def test_parquet_metadata_and_row_groups(tmp_path):
    out = tmp_path / "o.parquet"
    assert run("replay", EXAMPLES / "trace.bin", *ARGS, "--format", "parquet", "-o", out).exit_code == 0
    meta = pq.ParquetFile(out).metadata
    kv = meta.metadata
    assert kv[b"schema_version"] == b"2" and json.loads(kv[b"mcsa.replay.header"])["profile"] == "stm32f411"
    assert json.loads(kv[b"mcsa.replay.summary"])["packets"] == 400 and meta.num_row_groups == 1
    assert "needs -o" in run("replay", EXAMPLES / "trace.bin", *ARGS, "--format", "parquet").stderr


def several(tmp_path, *extra):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{%s}\n{%s,\"seq_len\":433305435341373281}\n" % (PACKET, PACKET))
    traces = [EXAMPLES / "trace.jsonl", EXAMPLES / "trace.bin", bad, EXAMPLES / "trace.csv"]
    out = tmp_path / f"out{len(extra)}"
    summary = tmp_path / f"summary{len(extra)}.jsonl"
    result = run("replay", *traces, *ARGS, "--format", "parquet", "-o", out, "--summary", summary, *extra)
    return result, out, summary


def test_several_traces_serial_and_on_two_workers(tmp_path):
    serial, out, summary = several(tmp_path)
    assert serial.exit_code == 2 and "bad.jsonl:2: seq_len 433305435341373281 is beyond the target's usize" in serial.stderr
    assert sorted(p.name for p in out.iterdir()) == ["trace.bin.parquet", "trace.csv.parquet", "trace.jsonl.parquet"]
    rows = parquet_rows(out / "trace.bin.parquet")
    assert [r["index"] for r in rows] == list(range(400)) and rows[0]["source"].endswith("trace.bin")
    sums = [json.loads(line) for line in summary.read_text().splitlines()]
    assert [s["error"] is None for s in sums] == [True, True, False, True] and sums[0]["packets"] == 400
    with socket.socket() as taken, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")  # a Dask dashboard already on the default port: no warning for the user
        with contextlib.suppress(OSError):  # (or the port is taken already)
            taken.bind(("", 8787))
            taken.listen()
        workers, out2, summary2 = several(tmp_path, "--workers", "2")
    assert workers.exit_code == 2 and summary2.read_text() == summary.read_text()
    assert not [w for w in warned if "already in use" in str(w.message)]
    for name in ("trace.bin.parquet", "trace.csv.parquet", "trace.jsonl.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(out2 / name))


def test_pieces_of_several_traces_in_flight_and_one_failing_midway_match_a_serial_run(tmp_path, monkeypatch):
    """Pieces small enough that those of several traces are in flight at once, one trace
    failing in its fifth piece with writes of its own and of the traces around it in flight;
    on two workers the first three traces run whole (each by one worker, its pieces in turn)
    and the last two in pieces: the same part files as a serial run's, byte for byte,
    nothing of the failed trace, and the same summaries."""
    monkeypatch.setattr(fleet, "CHUNK_BYTES", 8 << 10)
    good = (EXAMPLES / "trace.jsonl").read_bytes()
    lines = good.splitlines(keepends=True)
    traces = []
    for name, data in [("a.jsonl", good * 2), ("bad.jsonl", b"".join(lines[:300]) + b"{\"lambda\": 1}\n" + good),
                       ("c.jsonl", good), ("d.jsonl", good * 3)]:
        traces.append(tmp_path / name)
        traces[-1].write_bytes(data)
    assert len(byte_ranges(open_trace(str(traces[1])), fleet.CHUNK_BYTES)) > 10
    sources = [open_trace(str(t)) for t in [*traces, EXAMPLES / "trace.jsonl.gz"]]
    assert fleet.Fleet._whole(SimpleNamespace(client=object(), workers=2), sources) == {0, 1, 2}
    outputs = []
    for extra in ([], ["--workers", "2"]):
        out, summary = tmp_path / f"out{len(extra)}", tmp_path / f"summary{len(extra)}.jsonl"
        result = run("replay", *traces, EXAMPLES / "trace.jsonl.gz", *ARGS, "-o", f"{out}/", "--summary", summary, *extra)
        assert result.exit_code == 2 and "bad.jsonl:301: " in result.stderr, result.output
        outputs.append((out, summary.read_text()))
    (serial, said), (workers, said2) = outputs
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(workers) for p in workers.rglob("*") if p.is_file())
    assert sorted(p.name for p in serial.iterdir()) == ["a.jsonl.parquet", "c.jsonl.parquet", "d.jsonl.parquet",
                                                        "trace.jsonl.gz.parquet"]
    assert all((serial / f).read_bytes() == (workers / f).read_bytes() for f in files)
    assert pq.read_table(serial / "d.jsonl.parquet").num_rows == 1200 and said2 == said


def test_several_traces_text_records_name_their_source(tmp_path):
    result = run("replay", EXAMPLES / "trace.jsonl", EXAMPLES / "trace.bin", *ARGS, "--format", "jsonl")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    data = [r for r in lines if "index" in r]
    assert len(data) == 800 and data[400]["index"] == 0 and data[400]["source"].endswith("trace.bin")
    assert [r["summary"]["source"] for r in lines if "summary" in r] == [str(EXAMPLES / "trace.jsonl"),
                                                                       str(EXAMPLES / "trace.bin")]


@pytest.mark.parametrize("name", ["trace.jsonl", "trace.bin", "windows.jsonl"])
def test_byte_ranges_give_the_same_records(tmp_path, name):
    r = replayer()
    path = str(EXAMPLES / name)
    if name == "windows.jsonl":  # a byte order mark and CRLF line ends
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + (EXAMPLES / "trace.jsonl").read_bytes().replace(b"\n", b"\r\n"))
        path = str(path)
    whole = list(r.replay(path))
    pieces = byte_ranges(open_trace(path), 1000)
    assert len(pieces) > 5
    split = [p for piece in pieces for p in r.replay(path, None, False, *piece)]
    assert np.array_equal(np.concatenate([p.packets for p in whole]), np.concatenate([p.packets for p in split]))
    assert np.array_equal(np.concatenate([p.target_density for p in whole]), np.concatenate([p.target_density for p in split]))
    assert [t for p in whole for t in p.t or []] == [t for p in split for t in p.t or []]


def test_bad_records_in_the_middle_of_a_batch(tmp_path):
    lines = [json.dumps({**json.loads("{%s}" % PACKET), "lambda": i}) for i in range(300)]
    lines[137] = "{%s,\"t\":NaN}" % PACKET
    lines[200] = "{%s,\"flags\":1}" % PACKET
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run("replay", path, *ARGS, "--format", "jsonl", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and "t.jsonl:138: not JSON (NaN is not a JSON value)" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
    skipped = run("replay", path, *ARGS, "--format", "jsonl", "--skip-bad")
    kept = records(skipped.stdout)
    assert len(kept) == 298 and json.loads(skipped.stdout.splitlines()[-1])["summary"]["bad_records"] == 2
    good = records(run("replay", tmp_path / "t.jsonl", *ARGS, "--format", "jsonl", "--skip-bad").stdout)
    assert good == kept and "t.jsonl:201: not JSON (duplicate field `flags`)" in skipped.stderr


@pytest.mark.parametrize("name,content,message", [
    ("seg.jsonl", "{%s,\"seq_len\":433305435341373281}\n" % PACKET, "seg.jsonl:1: build_mask(seq_len=433305435341373281)"),
    ("w.jsonl", "{%s,\"seq_len\":4294967296}\n" % PACKET, "w.jsonl:1: build_mask(seq_len=4294967296)"),
    ("deep.jsonl", "[" * 1000 + "]" * 1000 + "\n", "deep.jsonl:1: not JSON (nested deeper than 128 levels)"),
    ("huge.jsonl", "{%s,\"seq_len\":1%s}\n" % (PACKET, "0" * 5000), "huge.jsonl:1: not JSON (integer literal of 5,001 digits is out of range"),
    ("inf.jsonl", "{%s,\"t\":Infinity}\n" % PACKET, "inf.jsonl:1: not JSON (Infinity is not a JSON value)"),
    ("big.jsonl", "{%s,\"t\":1e400}\n" % PACKET, "big.jsonl:1: not JSON (number 1e400 is out of range"),
    ("lead.jsonl", "{%s,\"seq_len\":01}\n" % PACKET, "lead.jsonl:1: not JSON"),
    ("ff.jsonl", "{%s}\n\f\n" % PACKET, "ff.jsonl:2: not JSON (Expecting value at column 1)"),
    ("lone.jsonl", "{%s,\"k\\ud800\":1}\n" % PACKET, "lone.jsonl:1: not JSON (a lone surrogate in a \\u escape)"),
    ("long.csv", ",".join(FIELDS) + ",t\n1,2,3,4,5,6," + "1" * 140000 + "\n", "long.csv:2: not valid CSV (a field is longer"),
    ("nan.csv", ",".join(FIELDS) + ",t\n1,2,3,4,5,6,nan\n", "nan.csv:2: t must be a finite number"),
    ("arabic.csv", ",".join(FIELDS) + "\n\u0661,2,3,4,5,6\n", "arabic.csv:2: lambda must be an integer"),
    ("under.csv", ",".join(FIELDS) + "\n1_0,2,3,4,5,6\n", "under.csv:2: lambda must be an integer"),
    ("dup.csv", ",".join(FIELDS) + ",flags\n1,2,3,4,5,6,6\n", "dup.csv:1: CSV header repeats flags"),
    ("quote.csv", ",".join(FIELDS) + '\n1,2,3,4,5,"6\n', "quote.csv:2: not valid CSV (unexpected end of data)"),
])
def test_every_refusal_names_its_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    result = run("replay", path, "--target", "x86_64", "--seq-len", 128, "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.glob("*o.jsonl*")) == []
    skipped = run("replay", path, "--target", "x86_64", "--seq-len", 128, "--skip-bad", "--format", "jsonl")
    assert skipped.exit_code == (2 if "header" in message else 0)  # a header cannot be skipped


def test_seq_len_beyond_a_32_bit_usize_and_invalid_utf8(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(("{%s}\n{%s,\"seq_len\":4294967296}\n" % (PACKET, PACKET)).encode() + b'{"lambda":"\xff"}\n')
    result = run("replay", path, *ARGS, "--skip-bad", "--format", "jsonl")
    assert "t.jsonl:2: seq_len 4294967296 is beyond the target's usize (u32" in result.stderr
    assert "t.jsonl:3: not UTF-8 text" in result.stderr and len(records(result.stdout)) == 1


def test_unknown_keys_are_reported_once_with_a_suggestion(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("{%s,\"seqlen\":4096,\"board\":1}\n" % PACKET * 3)
    result = run("replay", path, *ARGS, "--format", "jsonl")
    assert result.exit_code == 0 and result.stderr.count("unknown keys") == 1
    assert f"note: {path}: 2 unknown keys ignored: `board`, `seqlen` (did you mean `seq_len`?)\n" in result.stderr


def test_stdin_fail_on_flags_add_up_and_accounting_is_said():
    data = (EXAMPLES / "trace.jsonl").read_text()
    result = run("replay", "-", *ARGS, "--format", "jsonl", "--fail-on", "panic", "--fail-on", "over-budget", input=data)
    assert result.exit_code == 1 and "goes over the heap budget" in result.stderr
    assert len(records(result.stdout)) == 400
    header = json.loads(result.stdout.splitlines()[0])
    assert "allocator" in header["accounting"]["step_peak_bytes"]
    assert "bytes requested" in header["accounting"]["build_mask_peak_bytes"]
    assert "bytes requested" in run("replay", "--help").output
    zipped = run("replay", "-", *ARGS, "--format", "jsonl", input=gzip.compress((EXAMPLES / "trace.bin").read_bytes()))
    assert records(zipped.stdout) == [{**r, "t": None} for r in records(result.stdout)]


def test_a_debug_panic_is_a_verdict_in_the_record(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("{%s,\"seq_len\":70000}\n" % PACKET.replace('"partition_count":2', '"partition_count":1'))
    result = run("replay", path, "--target", "stm32f411-debug", "--seq-len", 128, "--format", "jsonl")
    assert result.exit_code == 0 and records(result.stdout)[0]["panic"] == "attempt to multiply with overflow"


def test_the_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("mcsa.app.replay.CACHE_KEYS", 8)
    r = replayer()
    path = tmp_path / "t.jsonl"
    path.write_text("".join("{%s,\"seq_len\":%d}\n" % (PACKET, 16 + i) for i in range(50)))
    assert sum(p.n for p in r.replay(str(path))) == 50 and len(r._cache) == 8


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_the_writers_bounded_text_caches_change_nothing(tmp_path, monkeypatch, fmt):
    """More distinct densities and keys than the writer keeps texts for (the
    limits made tiny here; 131,072 densities and 4,096 keys by default), over
    two traces whose densities partly differ."""
    other = tmp_path / "other.jsonl"
    rows = map(json.loads, (EXAMPLES / "trace.jsonl").read_text().splitlines())
    other.write_text("".join(json.dumps({**r, "boundary_concentration_q15": 97 * i % 32768}) + "\n"
                             for i, r in enumerate(rows)))
    args = ["replay", EXAMPLES / "trace.jsonl", other, *ARGS, "--format", fmt]
    whole = run(*args).stdout
    monkeypatch.setattr("mcsa.app.writers.DENSITY_TEXTS", 3)
    monkeypatch.setattr("mcsa.app.writers.RENDERED_KEYS", 1)
    assert run(*args).stdout == whole


@settings(max_examples=60, deadline=None)
@given(seq_len=st.integers(16, 300_000), parts=st.integers(2, 65535), intra=st.booleans(), cross=st.booleans())
def test_insertion_count_in_python_integers_matches_the_kernel(seq_len, parts, intra, cross):
    config = SparsityConfig(intra_partition_attention=intra, boundary_cross_attention=cross)
    plan = MincutSparseAttention(config, "x86_64-release").plan_mask(GatePacket(100, 0, 0, 0, parts, 0), seq_len)
    count = raw_positions(plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross, np.zeros(0, np.uint32), False)
    assert plan.insertion_count() == count


def test_read_trace_yields_records_and_errors_in_file_order(tmp_path):
    from mcsa.app.traces import Record, TraceError, read_trace

    path = tmp_path / "t.jsonl"
    path.write_text("{%s,\"seq_len\":64}\n{oops\n{%s,\"t\":1.5}\n" % (PACKET, PACKET))
    items = list(read_trace(path, skip_bad=True))
    assert [type(i) for i in items] == [Record, TraceError, Record]
    assert (items[0].seq_len, items[2].t, items[2].where) == (64, 1.5, f"{path}:3")
    assert items[0].gate == GatePacket(200, 200, 0, 0, 2, 0) and str(items[1]).startswith(f"{path}:2: not JSON")


def test_workers_without_dask_name_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # import fails as if not installed
    result = run("replay", EXAMPLES / "trace.bin", *ARGS, "--workers", 2)
    assert result.exit_code == 2 and "--workers needs dask.distributed: pip install 'mcsa[fleet]'" in result.stderr


def test_a_failed_write_on_the_writer_thread_is_raised(tmp_path):
    """Parts are written on a thread: a write error still reaches the caller (by the next part or
    by close), and the parts written before it are whole and in order."""
    from mcsa.app.writers import TextWriter

    class Full(io.StringIO):
        def write(self, text):
            if self.tell() > 2000:
                raise OSError(28, "No space left on device")
            return super().write(text)

    rep = replayer()
    parts = [rep.replay_batch(b, False)[0] for b in TraceReader(str(EXAMPLES / "trace.jsonl"), batch_records=20)]
    out = Full()
    writer = TextWriter(out, "jsonl", {}, False, False)
    with pytest.raises(OSError, match="No space"):
        offset = 0
        for part in parts:
            writer.write(part, offset)
            offset += part.n
        writer.close()
    writer.close()
    lines = out.getvalue().splitlines()[1:]
    assert len(lines) % 20 == 0 and [json.loads(line)["index"] for line in lines] == list(range(len(lines)))


VALUES = [b"0", b"7", b"-0", b"65535", b"65536", b"4294967295", b"4294967296", b"18446744073709551616", b"-1",
          b"1.0", b"2.5", b"1e2", b"1e400", b"true", b"null", b'"7"', b"[]", b"{}", b"12345678901234567890123"]


@st.composite
def json_line(draw):
    """A JSONL record as a firmware log might hold it: the known keys with values
    in and out of range, of other types, missing, repeated, escaped or joined by other keys."""
    keys = [k for k in FIELDS if draw(st.sampled_from(range(50)))] + [k for k in ("seq_len", "t") if draw(st.booleans())]
    if draw(st.sampled_from(range(4))) == 0:
        keys += draw(st.lists(st.sampled_from([*FIELDS, "seq_len", "t", *["device", "seqlen"] * 4]), min_size=1, max_size=2))
    items = []
    for key in draw(st.permutations(keys)):
        value = draw(st.sampled_from(VALUES) if draw(st.sampled_from(range(40))) == 0 else
                     st.integers(0, 300).map(lambda v: str(v).encode()))
        name = key.replace("a", "\\u0061", 1) if draw(st.sampled_from(range(20))) == 0 else key
        items.append(b'"%s": %s' % (name.encode(), value))
    return b"{" + b",".join(items) + b"}" + draw(st.sampled_from([b"\n", b" \r\n", b"\t\n"]))


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(json_line(), min_size=1, max_size=6))
def test_the_fast_json_decoders_agree_with_the_strict_path(lines):
    """Whatever the batch decoders (msgspec typed, then orjson) take, the strict
    one-record path takes too, with the same values (``t`` keeps int or float)."""
    from mcsa.app import traces

    fast = traces._fast_json(lines, b"".join(lines), set())
    strict = []
    for line in lines:
        try:
            strict.append(traces._record(traces.json_object(line, "x:1"), "x:1"))
        except traces.TraceError:
            assert fast is None, line
            return
    if fast is None:  # the strict path takes records the fast ones leave to it (null t, a bool...), fine
        return
    packets, seq, given, t = fast
    assert packets.tolist() == [r[0] for r in strict]
    own = [None] * len(lines) if seq is None else [int(s) if g else None for s, g in zip(seq.tolist(), given.tolist())]
    assert own == [r[1] for r in strict]
    assert [(type(v), v) for v in (t or [None] * len(lines))] == [(type(r[2]), r[2]) for r in strict]


@pytest.mark.parametrize("extra", ['"t": 18446744073709551616', '"t": 1%s' % ("0" * 40), '"device": 1%s' % ("0" * 40)])
def test_a_long_integer_beside_another_key_takes_the_strict_path(extra):
    """orjson reads an int beyond 64 bits as a float: such a batch is the strict path's."""
    from mcsa.app import traces

    lines = [b'{%s, %s, "dev": 0}\n' % (PACKET.encode(), extra.encode())]
    assert traces._fast_json(lines, lines[0], set()) is None


def test_plain_records_take_the_typed_decoder(monkeypatch):
    """A batch of the known keys alone never reaches orjson (the speed of JSONL replay)."""
    from mcsa.app import traces

    monkeypatch.setattr(traces, "_any_json", None)
    lines = [b'{%s, "t": %s}\n' % (PACKET.encode(), t) for t in (b"0", b"0.5", b"-0.0")]
    packets, seq, given, t = traces._fast_json(lines, b"".join(lines), set())
    assert len(packets) == 3 and seq is None and t == [0, 0.5, -0.0]


@settings(max_examples=1000, deadline=None)
@given(values=st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**70, 2**70),
                                 st.none(), st.sampled_from([1e-4, 9.999999999999999e-05, 1e16, 1.5e300, 1e-05, -0.0, 5e-324])),
                       max_size=30))
def test_record_numbers_print_as_python_repr(values):
    """A record's t (and index, seq_len) prints as Python's repr, as the one-record engine did."""
    from mcsa.app.writers import numbers

    assert numbers(values) == ["null" if v is None else repr(v) for v in values]


def test_parquet_t_is_the_double_serde_reads(tmp_path):
    """t as int or float, missing, or an int no double holds exactly (rounded to nearest, as serde_json reads it)."""
    ts = [0, 0.5, None, -0.0, 2**53 + 1, 2**70, 1e-05]
    path = tmp_path / "t.jsonl"
    path.write_text("".join("{%s%s}\n" % (PACKET, "" if t is None else f', "t": {t!r}') for t in ts))
    column = replay_table(str(path), "stm32f411", 128, dim=32).column("t").to_pylist()
    assert [None if v is None else float(v).hex() for v in ts] == [None if v is None else v.hex() for v in column]


def test_a_missing_output_folder_is_refused_before_any_output_is_written(tmp_path):
    result = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", tmp_path / "o.jsonl", "--summary",
                 tmp_path / "s.jsonl", "--plot", tmp_path / "nowhere" / "p.png")
    assert result.exit_code == 2 and f"--plot {tmp_path / 'nowhere' / 'p.png'}: No such file or directory" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_one_output_of_several_traces_keeps_the_good_ones_when_one_fails(tmp_path, fmt):
    """-o FILE and --summary were both dropped when one trace of several failed, though
    the summary line is what carries the error; now they are written, and the exit is 2."""
    mid = tmp_path / "mid.jsonl"
    mid.write_text((EXAMPLES / "trace.jsonl").read_text().splitlines()[0] + "\nbad\n")
    out, summary = tmp_path / f"m.{fmt}", tmp_path / "s.jsonl"
    result = run("replay", mid, EXAMPLES / "trace.bin", *ARGS, "-o", out, "--summary", summary)
    assert result.exit_code == 2 and f"{mid}:2: not JSON" in result.stderr
    sums = [json.loads(line) for line in summary.read_text().splitlines()]
    assert [(s["source"], s["packets"], s["error"] is None) for s in sums] == [
        (str(mid), 1, False), (str(EXAMPLES / "trace.bin"), 400, True)]
    if fmt == "parquet":  # (a Parquet file keeps the traces that completed)
        assert pq.read_table(out).num_rows == 400
    else:  # (a text output also keeps the failed trace's records read before the fault, as docs/replay.md says)
        assert sum("index" in json.loads(line) for line in out.read_text().splitlines()) == 401


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.bin.gz"])
def test_a_cut_gzip_trace_is_named_where_its_records_stop(tmp_path, name):
    """A gzip stream cut short said "at line 1" and kept no record, though 234 whole lines
    decompress before the cut: the records before the fault are read, the fault named there."""
    plain = (EXAMPLES / ("trace.jsonl" if name.endswith(".jsonl.gz") else "trace.bin")).read_bytes() * 20
    whole = gzip.compress(plain)
    cut = tmp_path / name
    cut.write_bytes(whole[:len(whole) // 3])
    prefix = zlib.decompressobj(31).decompress(cut.read_bytes())  # what the cut stream still holds
    if name.endswith(".jsonl.gz"):
        records = prefix.count(b"\n")
        where = f"at line {records + 1:,} of the decompressed trace"
    else:
        records, where = len(prefix) // 16, f"at byte {len(prefix) // 16 * 16:,} of the decompressed trace"
    result = run("replay", cut, EXAMPLES / "trace.bin", *ARGS, "--format", "jsonl")
    assert result.exit_code == 2 and f"{cut}: corrupt gzip stream" in result.stderr and where in result.stderr
    kept = [r for r in map(json.loads, result.stdout.splitlines()) if r.get("source") == str(cut) and "index" in r]
    assert 0 < records == len(kept) < len(plain) // (16 if name.endswith(".bin.gz") else 100)


def test_skip_bad_keeps_a_cut_trace_records_and_says_it_failed(tmp_path):
    """With several traces in one output and --skip-bad, a gzip cut short keeps the
    records read before the cut, and its summary line carries the error."""
    cut = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress((EXAMPLES / "trace.jsonl").read_bytes() * 100)  # 40,000 records, 6 MB: two reads
    cut.write_bytes(whole[:len(whole) * 9 // 10])
    result = run("replay", cut, EXAMPLES / "trace.bin", *ARGS, "--format", "jsonl", "--skip-bad")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summaries = [r["summary"] for r in lines if "summary" in r]
    kept = [r for r in lines if r.get("source") == str(cut)]
    assert [s["source"] for s in summaries] == [str(cut), str(EXAMPLES / "trace.bin")]
    assert "corrupt gzip stream" in summaries[0]["error"] and summaries[0]["packets"] == len(kept) > 0
    assert "error" not in summaries[1]


def test_ctrl_c_during_a_fleet_replay_stops_it_quietly(tmp_path):
    """A terminal's Ctrl-C goes to the whole process group: mcsa exits 130 and leaves
    no output; its Dask workers ignore it (no worker tracebacks) and are closed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    trace = tmp_path / "big.jsonl"
    trace.write_bytes((EXAMPLES / "trace.jsonl").read_bytes() * 500)  # 200,000 packets
    out = tmp_path / "o.jsonl"
    code = "import sys; from mcsa.cli import main; sys.argv[0] = 'mcsa'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "replay", *[str(trace)] * 12, *ARGS, "--format", "jsonl",
                             "-o", str(out), "--workers", "2"], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".o.jsonl.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the output's temporary file: the cluster is up
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]


def test_a_parquet_folder_for_several_traces_is_made_as_the_readme_shows(tmp_path):
    out = f"{tmp_path / 'replayed' / 'night'}/"  # not there yet, and written with a trailing slash
    result = run("replay", EXAMPLES / "trace.jsonl", EXAMPLES / "trace.bin", *ARGS, "--format", "parquet", "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "replayed" / "night").iterdir()) == ["trace.bin.parquet",
                                                                                 "trace.jsonl.parquet"]
    one = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--format", "parquet", "-o", f"{tmp_path / 'single'}/")
    assert one.exit_code == 0 and [p.name for p in (tmp_path / "single").iterdir()] == ["trace.jsonl.parquet"]


@pytest.mark.parametrize("profile", sorted(load_profiles()))
def test_every_built_in_profile_replays_fits_and_plans(profile):
    """One budget rule for the profile, the option and every command: the wasm32
    profile's default heap (2 GiB, more than one allocation may take on a 32-bit
    target but a heap all the same) was refused by replay alone."""
    replayed = run("replay", EXAMPLES / "trace.jsonl", "--target", profile, "--seq-len", 64, "--dim", 8,
                   "--format", "jsonl")
    assert replayed.exit_code == 0, replayed.output
    assert len(records(replayed.stdout)) == 400
    fit = run("fit", "--target", profile, "--seq-len", 64, "--partitions", 4, "--dim", 8, "--json")
    assert fit.exit_code in (0, 1) and json.loads(fit.stdout)["budget_bytes"] == load_profiles()[profile].heap_budget
    planned = run("plan", "--target", profile, "--dim", 8, "--partitions", 4, "--max-seq-len", 40, "--json")
    assert planned.exit_code == 0 and json.loads(planned.stdout)[0]["partitions"] == 4


def test_a_gzip_line_without_end_is_not_held_whole():
    """The gzip reader holds back the part of a line not yet ended, but never more than a
    record can be: an endless line (a crafted or corrupt file) is passed on for the reader
    to refuse, not held in memory to its end (a 60 MB line took 292 MB, now 170 MB)."""
    from mcsa.app import traces

    guard = traces._UpToFault(gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(b"{" + b"x" * (4 << 20)))), None)
    guard.readinto(bytearray(1 << 16))
    assert len(guard.ready) + len(guard.pending) <= traces.MAX_LINE + 2 * guard.PIECE
