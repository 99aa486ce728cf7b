"""Conformance vectors in the golden format: read a case, simulate it, compare.

A vectors file is gzip-compressed (or plain) JSON Lines, one case a line; its
kind (``density``, ``masks``, ``full``, ``scalar``, ``attention``) is told by its
name. Each case's ``results`` maps a build key to that build's result; f32
values are 8-hex-digit bit patterns and hashes 16-hex-digit FNV-1a 64.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from firmware_model import heap
from mcsa.core.attention import MincutSparseAttention
from mcsa.core.fnv import fnv1a64
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, MaskStats, SparseMask
from mcsa.core import jsonio
from mcsa.core.checks import check_uint
from mcsa.core.packets import F32_BITS, GatePacket, SparsityConfig, f32_from_json
from mcsa.core.target import Target, TargetPanic

from .traces import GZIP_MAGIC

KINDS = ("density", "masks", "full", "scalar", "attention")
OUTPUT_LIST_LIMIT = 8192
"""Outputs with at most this many elements are listed in full."""
POSITIONS_LIST_LIMIT = 4096
"""Masks with at most this many positions are listed in full."""
LINE_LIMIT = 1 << 26
"""Longest case line read (64 MiB; the golden files' longest is about 0.5 MiB)."""
QKV_LIMIT = 1 << 26
"""Largest q, k or v (elements) an attention case may ask for: 64 MiB each."""
F32_FIELDS = ("density", "sparsity", "flops_ratio", "output")
"""Result fields holding f32 bit patterns (a ULP distance is given for them)."""


def kind_of(path: str | Path) -> str:
    """The case kind a vectors file holds, from its name (``masks.jsonl.gz`` → ``masks``).

    Raises
    ------
    ValueError
        If the name does not start with a known kind.
    """
    stem = Path(path).name.split(".")[0]
    for kind in KINDS:
        if stem.startswith(kind):
            return kind
    raise ValueError(f"{path}: cannot tell the case kind from the file name; it must start with one of "
                     f"{', '.join(KINDS)}")


def read_cases(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, case)`` from a JSON Lines file, gzip (told by its name or
    its magic number) or plain; JSON is read strictly (:func:`mcsa.core.jsonio.loads`).

    Raises
    ------
    ValueError
        Naming the file and line of a line that is not a JSON object or not
        UTF-8, or where a gzip stream is truncated or corrupt.
    """
    path = Path(path)
    number = 0
    try:
        with open(path, "rb") as file:
            compressed = path.suffix == ".gz" or file.peek(len(GZIP_MAGIC))[:len(GZIP_MAGIC)] == GZIP_MAGIC
            lines = gzip.GzipFile(fileobj=file, mode="rb") if compressed else file
            for number, raw in enumerate(iter(lambda: lines.readline(LINE_LIMIT + 1), b""), 1):
                where = f"{path}:{number}"
                if len(raw) > LINE_LIMIT:
                    raise ValueError(f"{where}: line longer than {LINE_LIMIT:,} bytes")
                try:
                    line = (raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw).decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{where}: not UTF-8 (byte {err.start} of the line)") from None
                if line.strip():
                    case = jsonio.loads(line, where)
                    if not isinstance(case, dict):
                        raise ValueError(f"{where}: a case must be a JSON object, got {type(case).__name__}")
                    yield number, case
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}:{number + 1}: truncated or corrupt gzip stream ({err})") from None


def f32_hex(value) -> str:
    """An f32 as its 8-hex-digit bit pattern."""
    return f"{int(np.float32(value).view(np.uint32)):08x}"


def hash_hex(array: np.ndarray) -> str:
    """FNV-1a 64 of an array's bytes, as 16 hex digits."""
    return f"{fnv1a64(array):016x}"


def splitmix64(seed: int, count: int) -> np.ndarray:
    """``count`` outputs of SplitMix64 seeded with ``seed``, as uint64."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + gamma * np.arange(1, count + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def qkv_from_spec(spec: str, count: int | tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v from a golden ``data`` string: ``count`` int8 each, or ``(q_len, k_len, v_len)``.

    ``r<seed>``: SplitMix64 low bytes, one stream for q then k then v (seed a u64);
    ``c<a>,<b>,<c>``: constant fills (i8 each); ``h<q>,<k>,<v>``: hex bytes.

    Raises
    ------
    TypeError
        If ``spec`` is not a string.
    ValueError
        If the spec is malformed, out of range, or hex data has the wrong length.
    """
    if not isinstance(spec, str):
        raise TypeError(f"data must be a spec string (r<seed>, c<a>,<b>,<c> or h<hex>,<hex>,<hex>), got {spec!r}")
    lengths = (count,) * 3 if isinstance(count, int) else tuple(count)
    parts = spec[1:].split(",")
    if spec[:1] == "r" and _digits(spec[1:]) and int(spec[1:]) < 1 << 64:
        data = (splitmix64(int(spec[1:]), sum(lengths)) & np.uint64(0xFF)).astype(np.uint8).view(np.int8)
        return tuple(np.split(data, np.cumsum(lengths[:2])))
    if spec[:1] == "c" and len(parts) == 3 and all(_digits(p.removeprefix("-")) and -128 <= int(p) <= 127
                                                   for p in parts):
        return tuple(np.full(n, int(p), np.int8) for n, p in zip(lengths, parts))
    if spec[:1] == "h" and len(parts) == 3 and all(len(p) == 2 * n for n, p in zip(lengths, parts)):
        try:
            return tuple(np.frombuffer(bytes.fromhex(p), np.int8) for p in parts)
        except ValueError:
            pass
    raise ValueError(f"bad data spec {spec[:40]!r} for {'/'.join(map(str, lengths))} elements")


def _digits(text: str) -> bool:
    return 0 < len(text) <= 40 and text.isascii() and text.isdigit()


def _size(case: dict, key: str, target: Target) -> int:
    """A usize field of a case, checked against the target's usize.

    Raises
    ------
    KeyError, TypeError, ValueError
        If it is missing, not an integer, or out of range.
    """
    return check_uint(case[key], key, target.usize_max)


def _panic_or(fn) -> dict:
    try:
        return {"panic": None, **fn()}
    except TargetPanic as panic:
        return {"panic": panic.message}


def simulate(kind: str, case: dict, target: Target, position_limit: int = DEFAULT_POSITION_LIMIT) -> dict:
    """Run one case on a target; the result in the golden format, with the
    ``heap`` figures of :mod:`firmware_model.heap` for masks, full and attention.

    Raises
    ------
    ValueError, TypeError
        If the case is malformed (a missing or invalid field).
    """
    bits = target.usize_bits
    if not isinstance(case, dict):
        raise TypeError(f"a case must be a JSON object, got {type(case).__name__}")
    if kind == "density":
        sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target, position_limit)
        return {"density": f32_hex(sim.calculate_density(GatePacket.from_dict(case["gate"])))}
    if kind == "scalar":
        sim = MincutSparseAttention(target=target)
        seq_len = _size(case, "seq_len", target)
        stats = MaskStats(True, _size(case, "num_positions", target), np.float32(0), np.zeros(0), np.zeros(0))
        out = {}
        for name, call in (
            ("flops_ratio", lambda: f32_hex(sim.estimated_flops_ratio(stats, seq_len))),
            ("max_positions", lambda: SparseMask.empty().max_positions(seq_len, target)),
        ):
            try:
                out[name], out[f"{name}_panic"] = call(), None
            except TargetPanic as panic:
                out[name], out[f"{name}_panic"] = None, panic.message
        return out
    if kind == "full":
        seq_len = _size(case, "seq_len", target)

        def full():
            mask = SparseMask.full(seq_len, target, position_limit)
            return {
                "num_positions": mask.num_positions,
                "positions_fnv1a64": hash_hex(mask.positions),
                "heap": heap.full_mask_usage(seq_len, bits).as_dict(),
            }

        return _panic_or(full)
    if kind == "masks":
        sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target, position_limit)
        seq_len = _size(case, "seq_len", target)
        gate = GatePacket.from_dict(case["gate"])

        def masks():
            mask = sim.build_mask(gate, seq_len)
            out = {
                "num_positions": mask.num_positions,
                "density": f32_hex(mask.density),
                "sparsity": f32_hex(mask.sparsity()),
                "positions_fnv1a64": hash_hex(mask.positions),
                "partition_boundaries": mask.partition_boundaries.tolist(),
                "boundary_tokens": mask.boundary_tokens.tolist(),
                "heap": heap.build_mask_usage(sim.config, gate, seq_len, bits).as_dict(),
            }
            if mask.num_positions <= POSITIONS_LIST_LIMIT:
                out["positions"] = mask.positions.tolist()
            return out

        return _panic_or(masks)
    if kind == "attention":
        sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target, position_limit)
        dim, mask_seq_len = _size(case, "dim", target), _size(case, "mask_seq_len", target)
        if "qkv_seq_len" in case:  # q, k, v of qkv_seq_len rows each
            rows = _size(case, "qkv_seq_len", target)
            lengths = (rows * max(dim, 1),) * 3
        else:  # q, k, v of their own lengths, as Rust accepts them (seq_len = q.len() / dim)
            lengths = tuple(_size(case, f"{name}_len", target) for name in "qkv")
            rows = lengths[0] // max(dim, 1)
        if max(lengths) > QKV_LIMIT:
            raise ValueError(f"q, k, v of {'/'.join(f'{n:,}' for n in lengths)} elements, over the limit of "
                             f"{QKV_LIMIT:,} per array")
        q, k, v = qkv_from_spec(case["data"], lengths)
        gate = GatePacket.from_dict(case["gate"])
        scale = f32_from_json(case["scale"], "scale")

        def attention():
            mask = sim.build_mask(gate, mask_seq_len)
            output = sim.sparse_attention(q, k, v, mask, dim, scale)
            out = {
                "len": output.size,
                "output_fnv1a64": hash_hex(output),
                "heap": heap.sparse_attention_usage(mask, rows, dim, bits).as_dict(),
            }
            if output.size <= OUTPUT_LIST_LIMIT:
                out["output"] = [f32_hex(x) for x in output]
            return out

        return _panic_or(attention)
    raise ValueError(f"unknown case kind {kind!r}")


def expected_for(case: dict, build: str) -> dict:
    """A case's expected result for one build, with listed positions folded in
    (a build that panicked has none).

    Raises
    ------
    KeyError
        If the case has no result for ``build``.
    TypeError
        If ``results`` or the build's result is not a JSON object, or is empty.
    """
    results = case["results"]
    if not isinstance(results, dict) or not isinstance(results[build], dict):
        raise TypeError("results must map each build to a JSON object")
    if not results[build]:
        raise TypeError(f"the result for build {build!r} is empty: nothing to compare")
    expected = dict(results[build])
    if expected.get("panic"):
        return expected
    if "positions" in case:
        expected["positions"] = case["positions"]
    elif isinstance(case.get("positions_by_build"), dict) and build in case["positions_by_build"]:
        expected["positions"] = case["positions_by_build"][build]
    return expected


RESULT_FIELDS = {
    "density": {"density"},
    "scalar": {"flops_ratio", "flops_ratio_panic", "max_positions", "max_positions_panic"},
    "full": {"panic", "num_positions", "positions_fnv1a64", "heap"},
    "masks": {"panic", "num_positions", "density", "sparsity", "positions_fnv1a64", "partition_boundaries",
              "boundary_tokens", "heap", "positions"},
    "attention": {"panic", "len", "output_fnv1a64", "heap", "output"},
}
"""The fields a result of each kind may hold (the golden format; a build that panicked holds fewer)."""


def check_expected(kind: str, expected: dict) -> None:
    """Refuse an expected result that no simulator result could equal: a field its kind
    does not have, an f32 that is not 8 hex digits, a panic that is not text.

    Raises
    ------
    ValueError
        Naming the field: a malformed dump is bad input, not a mismatch of the simulator.
    """
    extra = sorted(set(expected) - RESULT_FIELDS[kind])
    if extra:
        raise ValueError(f"a {kind} result has no field {', '.join(map(repr, extra))} (it holds "
                         f"{', '.join(sorted(RESULT_FIELDS[kind]))}): is this a {kind} file? (--kind)")
    for name in F32_FIELDS:
        value = expected.get(name)
        if name == "output" and value is not None and (not isinstance(value, list) or not all(map(_f32_text, value))):
            raise ValueError("output must be a list of f32 bit patterns of 8 hex digits")
        if name != "output" and value is not None and not _f32_text(value):
            raise ValueError(f"{name} must be an f32 bit pattern of 8 hex digits, got {value!r:.40}")
    for name in (n for n in RESULT_FIELDS[kind] if n.endswith("panic")):
        if expected.get(name) is not None and not isinstance(expected[name], str):
            raise ValueError(f"{name} must be the panic message (text) or null, got {expected[name]!r:.40}")


def _f32_text(value) -> bool:
    return isinstance(value, str) and F32_BITS.fullmatch(value) is not None


def f32_line(bits):
    """f32 bit patterns (an int or an array) on the integer line where adjacent
    floats differ by 1, so that a difference is a distance in ULPs (int64)."""
    bits = np.asarray(bits, dtype=np.int64)
    return np.where(bits < 0x8000_0000, bits, 0x8000_0000 - bits)


def ulps(want, have) -> int | None:
    """The ULP distance between two f32 bit-pattern strings (an integer), or None
    if either is not one."""
    def bits(text):
        return int(text, 16) if isinstance(text, str) and F32_BITS.fullmatch(text) else None

    a, b = bits(want), bits(have)
    return None if a is None or b is None else int(abs(f32_line(a) - f32_line(b)))


def _apart(d: int) -> str:
    return f"{d} ULP{'s' if d != 1 else ''} apart"


def _distance(key: str, want, have) -> str:
    d = ulps(want, have) if key in F32_FIELDS else None
    return "" if d is None else f" ({_apart(d)})"


def differences(expected: dict, got: dict, prefix: str = "") -> list[str]:
    """Fields where ``got`` differs from ``expected``; only the fields that
    ``expected`` holds are compared, nested objects (``heap``) field by field,
    lists element by element (the first differing index, the count, and for f32
    lists the largest ULP distance)."""
    out = []
    for key, want in expected.items():
        have = got.get(key)
        name = f"{prefix}{key}"
        if isinstance(want, dict) and isinstance(have, dict):
            out += differences(want, have, f"{name}.")
        elif isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
            wrong = [i for i, (a, b) in enumerate(zip(want, have)) if a != b]
            if wrong:
                i = wrong[0]
                line = (f"{name}[{i}]: expected {_short(want[i])}, got {_short(have[i])}"
                        f"{_distance(key, want[i], have[i])}; {len(wrong):,} of {len(want):,} elements differ")
                far = [(ulps(want[j], have[j]), j) for j in wrong]
                if key in F32_FIELDS and all(d is not None for d, _ in far):
                    d, j = max(far)
                    line += f", the farthest {_apart(d)} at [{j}]"
                out.append(line)
        elif have != want:
            out.append(f"{name}: expected {_short(want)}, got {_short(have)}{_distance(key, want, have)}")
    return out


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
