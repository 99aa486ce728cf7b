"""Mutated inputs to verify, --config and attention: whatever the mutation, the run
ends with 0, 1 or 2, never a traceback; a refusal (2) names its place (the file,
with its line for vectors, or the option); a failed run leaves no output file.

Seeded (the derandomized profile of conftest.py) and bounded: a few dozen runs
per input kind, each on small cases with a low --position-limit.
"""

import gzip
import json
import re
from itertools import islice

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcsa.cli import main

from .conftest import BUILDS, GOLDEN

FUZZ = settings(max_examples=80, suppress_health_check=list(HealthCheck))
LIMIT = "20000"  # --position-limit: every mask a mutation asks for stays small


def _small_cases(kind: str, count: int = 3) -> list[dict]:
    with gzip.open(GOLDEN / f"{kind}.jsonl.gz", "rt") as lines:
        short = (json.loads(line) for line in lines if len(line) < 6000)
        return list(islice(short, count))


SEEDS = {kind: _small_cases(kind) for kind in ("density", "masks", "full", "scalar", "attention")}

INTS = [-1, 0, 1, 2, 3, 31, 32, 255, 256, 65535, 65536, 2**31, 2**32, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63)]
leaves = st.one_of(st.none(), st.booleans(), st.sampled_from(INTS), st.integers(-300, 300),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                   st.sampled_from(["r1", "c1,2,3", "h00,00,00", "3f800000", "Adaptive", "zz"]))
json_values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
JUNK = ['"', "{", "}", "[", "]", ",", ":", "NaN", "Infinity", "1e400", "-", "\\", "\x00", "\xff", "é", "9" * 50,
        '"a":1', "null", " ", "\n"]


def _paths(value, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            yield from _paths(v, prefix + (i,))


def _replace(value, path, new):
    if not path:
        return new
    value = json.loads(json.dumps(value))
    node = value
    for step in path[:-1]:
        node = node[step]
    if new is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return value


_DELETE = object()


@st.composite
def mutated_json(draw, record):
    """``record`` as JSON text with one or two mutations: a value replaced or
    deleted, or the text cut, spliced with junk or given a duplicate key."""
    for _ in range(draw(st.integers(0, 2))):
        paths = [p for p in _paths(record) if p]
        path = draw(st.sampled_from(paths)) if paths else ()
        record = _replace(record, path, draw(st.one_of(json_values, st.just(_DELETE) if path else json_values)))
    text = json.dumps(record)
    how = draw(st.sampled_from(["value", "value", "cut", "junk", "duplicate"]))
    if how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "junk":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(JUNK)) + text[at + draw(st.integers(0, 3)):]
    elif how == "duplicate" and text.startswith("{") and len(text) > 2:
        key = re.match(r'\{("[^"]*"):', text)
        if key:
            text = "{" + key.group(1) + ": 0, " + text[1:]
    return text


def check(result, *places):
    """Exit 0, 1 or 2 without a traceback; on 2, one of ``places`` is named."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output and "Aborted" not in result.output, result.output
    if result.exit_code == 2:
        assert any(p in result.stderr for p in places), (places, result.stderr)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(SEEDS)), build=st.sampled_from(BUILDS),
       gz=st.booleans())
def test_verify_on_mutated_vectors(tmp_path_factory, data, kind, build, gz):
    case = data.draw(st.sampled_from(SEEDS[kind]))
    text = data.draw(mutated_json(case))
    path = tmp_path_factory.mktemp("v") / f"{kind}-fuzz.jsonl{'.gz' if gz else ''}"
    raw = (text + "\n").encode("utf-8", "surrogatepass")
    if gz:
        raw = gzip.compress(raw)
        raw = raw[: data.draw(st.one_of(st.just(len(raw)), st.integers(len(raw) - 12, len(raw))))]  # or cut
    path.write_bytes(raw)
    result = invoke("verify", path, "--build", build, "--position-limit", LIMIT)
    check(result, f"{path}:", f"{path}: no cases")
    if text == json.dumps(case) and not gz:
        assert result.exit_code == 0, result.output  # an untouched case still verifies


@FUZZ
@given(data=st.data(), toml=st.booleans())
def test_mask_with_a_mutated_config(tmp_path_factory, data, toml):
    base = {"intra_partition_attention": True, "boundary_cross_attention": False,
            "lambda_based_density": {"Linear": {"min_density": 0.1, "max_density": 0.9}},
            "max_cross_partition_edges": 20, "min_density_q15": 3277, "max_density_q15": 29491}
    text = data.draw(mutated_json(base))
    folder = tmp_path_factory.mktemp("c")
    path = folder / ("cfg.toml" if toml else "cfg.json")
    if toml:
        text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in json.loads(text).items()
                         if v is not None) if _object(text) else text
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    png = folder / "m.png"
    draw_png = data.draw(st.integers(0, 4)) == 0  # matplotlib takes most of the time: one run in five
    result = invoke("mask", "--lambda", data.draw(st.sampled_from([0, 40, 200, 2**32 - 1])), "--partitions",
                    data.draw(st.integers(0, 9)), "--seq-len", data.draw(st.integers(0, 64)), "--config", path,
                    "--position-limit", LIMIT, *(["--png", png] if draw_png else []))
    check(result, f"{path}: ")
    assert png.exists() == (draw_png and result.exit_code == 0)


def _toml(value) -> str:
    """A JSON value as a TOML value (inline tables; nulls dropped, as TOML has none)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v is not None) + "]"
    return json.dumps(value)


def _object(text):
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


arrays = st.one_of(
    st.tuples(st.just("int8"), st.sampled_from([32, 48, 64])),
    st.tuples(st.sampled_from(["int8", "uint8", "int16", "float32"]), st.integers(0, 80)),
    st.sampled_from(["empty", "junk", "npz", "pickle"]),
)


@FUZZ
@given(data=st.data(), specs=st.one_of(arrays.map(lambda a: (a, a, a)), st.tuples(arrays, arrays, arrays)),
       dim=st.sampled_from([1, 2, 4, 8, 16, 3]),
       scale=st.sampled_from(["0.25", "0.25", "1", "-3e38", "1e39", "nan", "0", "x"]))
def test_attention_on_mutated_arrays(tmp_path_factory, data, specs, dim, scale):
    folder = tmp_path_factory.mktemp("a")
    rng = np.random.default_rng(0)
    args = []
    for name, spec in zip("qkv", specs):
        path = folder / f"{name}.npy"
        if spec == "empty":
            path.write_bytes(b"")
        elif spec == "junk":
            path.write_bytes(b"\x93NUMPY\x01\x00" + bytes(rng.integers(0, 256, 40, dtype=np.uint8)))
        elif spec == "npz":
            np.savez(path.with_suffix(".npz"), a=np.zeros(4, np.int8))
            path = path.with_suffix(".npz")
        elif spec == "pickle":
            np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:
            dtype, size = spec
            np.save(path, rng.integers(-128, 128, size).astype(dtype))
        args += [f"--{name}", path]
    gate = {"lambda": data.draw(st.sampled_from([10, 100, 300])), "lambda_prev": 100, "boundary_edges": 0,
            "boundary_concentration_q15": 0, "partition_count": data.draw(st.integers(0, 5)), "flags": 0}
    gate = data.draw(st.one_of(st.just(json.dumps(gate)), mutated_json(gate)))
    out = folder / "out.npy"
    result = invoke("attention", *args, "--dim", dim, "--scale", scale, "--gate", gate, "-o", out)
    check(result, "--q", "--k", "--v", "--gate", "--scale", "--dim", "'--")
    assert out.exists() == (result.exit_code == 0)
    if result.exit_code == 0:
        ulps = json.loads(result.stdout)["max_ulp_error"]
        assert ulps is None or type(ulps) is int  # None: only one of output and reference is NaN somewhere
