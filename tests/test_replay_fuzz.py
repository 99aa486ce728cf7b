"""Mutated traces of every format (jsonl, csv, bin, each also gzipped): every
input gets an answer (exit 0, 1 or 2), never a traceback; every refusal names
the file and a line or byte offset; a refused trace leaves no output file;
with --skip-bad, the records of the lines left intact are unchanged.

Seeded (the suite's derandomized hypothesis profile) and bounded: 200 traces of
6 packets each, a few seconds."""

import csv
import functools
import gzip
import io
import json
import re

import numpy as np
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mcsa.cli import main
from mcsa.core.packets import FIELDS, PACKET_DTYPE

ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "16", "--format", "jsonl"]
ROWS = [{"lambda": 20 + 40 * i, "lambda_prev": 100, "boundary_edges": i, "boundary_concentration_q15": 900 * i,
         "partition_count": 1 + i % 4, "flags": i % 2, "seq_len": 64 + 32 * i, "t": 0.5 * i} for i in range(6)]
HOSTILE = [b"NaN", b"Infinity", b"1e400", b"-1", b"01", b"1" * 60, b"\xff\xfe", b"\xd9\xa1", b"1_0", b'"', b"{",
           b"[" * 300, b'"lambda":1,', b'"seqlen":5,', b"nan", b"inf", b"4294967296", b"18446744073709551616",
           b"433305435341373281", b"\x00", b",", b"\r\n", b"true", b"null", b" ", b"<long>"]


def original(fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    if fmt == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, [*FIELDS, "seq_len", "t"], lineterminator="\n")
        w.writeheader()
        w.writerows(ROWS)
        return out.getvalue().encode()
    return np.array([tuple(r[k] for k in FIELDS) for r in ROWS], PACKET_DTYPE).tobytes()


def records(output: str) -> list:
    return [{k: v for k, v in json.loads(line).items() if k != "index"}
            for line in output.splitlines() if line.startswith('{"index"')]


@functools.cache
def replayed(fmt: str) -> list:
    """The records of the unmutated trace."""
    return records(CliRunner().invoke(main, ["replay", "-", *ARGS, "--input-format", fmt], input=original(fmt)).stdout)


def run(path, *extra):
    return CliRunner().invoke(main, ["replay", str(path), *ARGS, *extra])


mutation = st.tuples(st.sampled_from(["insert", "replace", "delete"]), st.integers(0, 10**6),
                     st.one_of(st.sampled_from(HOSTILE), st.binary(min_size=1, max_size=4)), st.integers(1, 8))


@settings(max_examples=200, deadline=None)
@given(fmt=st.sampled_from(["jsonl", "csv", "bin"]), gz=st.booleans(), mutations=st.lists(mutation, min_size=1, max_size=2),
       line=st.integers(0, 5))
def test_mutated_traces_get_an_answer(tmp_path_factory, fmt, gz, mutations, line):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = original(fmt)
    lines = data.splitlines(keepends=True)
    text = fmt != "bin"
    target = line + (fmt == "csv")  # a data line (csv: after the header); binary: the whole file
    piece = lines[target].rstrip(b"\n") if text else data  # the line's end stays, so the next line is intact
    for kind, at, token, length in mutations:
        token = b"7" * 140000 if token == b"<long>" else token  # a CSV field over the csv module's limit
        at %= len(piece) + 1
        piece = (piece[:at] + token + piece[at:] if kind == "insert" else
                 piece[:at] + token + piece[at + len(token):] if kind == "replace" else piece[:at] + piece[at + length:])
    mutated = b"".join(lines[:target] + [piece + b"\n"] + lines[target + 1:]) if text else piece
    name = f"t.{fmt}" + (".gz" if gz else "")
    path = tmp / name
    path.write_bytes(gzip.compress(mutated, mtime=0) if gz else mutated)
    out = tmp / "out.jsonl"
    result = run(path, "-o", out)
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError))
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []
    if result.exit_code == 2:
        assert re.search(re.escape(name) + r"(:\d+:|: byte \d+|.* at (line|byte) \d+|: .* the content looks like)",
                         result.stderr), result.stderr
        assert not out.exists()
    skipped = run(path, "--skip-bad")
    assert skipped.exit_code in (0, 1, 2) and "Traceback" not in skipped.output
    if text and b'"' not in piece and skipped.exit_code == 0:
        before = replayed(fmt)
        kept = records(skipped.stdout)
        intact = [r for i, r in enumerate(before) if i != line]
        it = iter(kept)
        assert all(any(r == k for k in it) for r in intact), "a record of an intact line changed"
    if not text and len(piece) == len(data) and skipped.exit_code == 0:
        before = replayed(fmt)
        kept = records(skipped.stdout)
        changed = {i for i in range(len(ROWS)) if piece[16 * i:16 * i + 16] != data[16 * i:16 * i + 16]}
        assert [k for i, k in enumerate(kept) if i not in changed] == [b for i, b in enumerate(before) if i not in changed]
