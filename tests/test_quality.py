"""mcsa.app.quality and `mcsa quality` on a fixture of real SmolLM2 activations,
checked against a plain per-row Python computation of the same definitions."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mcsa import GatePacket, MincutSparseAttention
from mcsa.cli import main
from mcsa.app.quality import kernels
from mcsa.app.quality import masks as mk
from mcsa.app.quality import metrics

DATA = Path(__file__).parent / "data" / "quality"
FIXTURE = DATA / "declaration_l3_l20_h012_t128.npz"
"""Layers 3 and 20, query heads 0-2 (kv head 0), first 128 tokens of the Declaration text."""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def acts():
    return metrics.load_activations(FIXTURE)


# ---- a plain per-row reference of the definitions ------------------------------------

def row_softmax(q_row, k, i, scale):
    """Dense causal probabilities of query row i, one math.exp at a time."""
    scores = [float(np.dot(q_row.astype(np.float64), k[j].astype(np.float64))) * scale for j in range(i + 1)]
    top = max(scores)
    e = [math.exp(s - top) for s in scores]
    total = sum(e)
    return [x / total for x in e]


def plain_head(q, k, v, scale, keys_of_row):
    """(recall, output error) of one head; ``keys_of_row(i, probs)`` gives row i's keys."""
    t, d = q.shape
    v = v.astype(np.float64)
    dense, masked, recall = np.zeros((t, d)), np.zeros((t, d)), 0.0
    for i in range(t):
        p = row_softmax(q[i], k, i, scale)
        for j in range(i + 1):
            dense[i] += p[j] * v[j]
        keys = sorted(set(keys_of_row(i, p)))
        mass = sum(p[j] for j in keys)
        recall += mass
        for j in keys:
            masked[i] += p[j] / mass * v[j]
    err = math.sqrt(((masked - dense) ** 2).sum()) / math.sqrt((dense ** 2).sum())
    return recall / t, err


def causal_pairs_in_order(t, key):
    return sorted(((i, j) for i in range(t) for j in range(i + 1)), key=key)


def plain_keys(family, t, positions, sinks, probs_of_head):
    """Row -> keys for each family, built from plain sorts (no code shared with mcsa.app.quality)."""
    ref_rows = {i: [] for i in range(t)}
    for i, j in positions:
        ref_rows[int(i)].append(int(j))
    n = len(positions)
    if family == "reference":
        return lambda i, p: ref_rows[i]
    if family == "reference+sinks":
        return lambda i, p: ref_rows[i] + list(range(min(sinks, i + 1)))
    if family in ("window", "a-shape", "strided"):
        if family == "window":
            order = causal_pairs_in_order(t, lambda ij: (ij[0] - ij[1], -ij[0]))
        elif family == "a-shape":
            order = causal_pairs_in_order(t, lambda ij: (ij[1] >= 4, ij[0] - ij[1], -ij[0]))
        else:
            count = {s: sum(min(i + 1, s) + i // s for i in range(t)) for s in range(1, t + 1)}
            fits = [s for s in count if count[s] <= n]
            stride = fits[0] if fits else min(count, key=count.get)
            order = causal_pairs_in_order(
                t, lambda ij: (not ((ij[0] - ij[1]) < stride or (ij[0] - ij[1]) % stride == 0),
                               ij[0] - ij[1], -ij[0]))
        rows = {i: [] for i in range(t)}
        for i, j in order[:n]:
            rows[i].append(j)
        return lambda i, p: rows[i]
    if family == "top-k-row":
        return lambda i, p: sorted(range(i + 1), key=lambda j: -p[j])[: len(ref_rows[i])]
    if family == "top-n":
        ranked = sorted(((-probs_of_head[i][j], i, j) for i in range(t) for j in range(i + 1)))[:n]
        rows = {i: [] for i in range(t)}
        for _, i, j in ranked:
            rows[i].append(j)
        return lambda i, p: rows[i]
    raise AssertionError(family)


@pytest.mark.parametrize("partitions", [2, 5])
def test_engine_matches_a_plain_per_row_computation(acts, partitions):
    settings = metrics.Settings(partitions=(partitions,), sinks=2, exact=False)
    records = {r["mask"]: r for r in metrics.evaluate(acts, settings)}
    t = acts.q.shape[2]
    sim = MincutSparseAttention()
    positions = sim.build_mask(GatePacket(200, 200, 0, 0, partitions, 0), t).positions.tolist()
    for family in mk.FAMILIES:
        recalls, errors = [], []
        for layer in range(acts.q.shape[0]):
            for h in range(acts.q.shape[1]):
                q, k, v = acts.q[layer, h], acts.k[layer, 0], acts.v[layer, 0]
                probs = [row_softmax(q[i], k, i, acts.scale) for i in range(t)] if family == "top-n" else None
                keys = plain_keys(family, t, positions, 2, probs)
                r, e = plain_head(q, k, v, acts.scale, keys)
                recalls.append(r)
                errors.append(e)
        rec = records[family]
        assert rec["recall_mean"] == pytest.approx(np.mean(recalls), abs=1e-9), family
        assert rec["out_err_median"] == pytest.approx(np.median(errors), rel=1e-9), family


def test_baselines_hold_exactly_the_references_positions(acts):
    records = metrics.evaluate(acts, metrics.Settings(partitions=(2, 3, 4, 8, 16), sinks=1, exact=False))
    t = acts.q.shape[2]
    sim = MincutSparseAttention()
    for rec in records:
        n = sim.build_mask(GatePacket(200, 200, 0, 0, rec["partitions"], 0), t).num_positions
        if rec["mask"] == "reference+sinks":
            assert rec["positions"] > n
        else:
            assert rec["positions"] == n, rec["mask"]
        assert rec["mask_bytes"] == 4 * rec["positions"]
        assert rec["density"] == rec["positions"] / (t * (t + 1) / 2)
        assert 0 <= rec["recall_min_head"] <= rec["recall_mean"] <= 1


def test_oracles_bound_every_mask_of_the_same_size(acts):
    for p in (2, 4, 8):
        records = {r["mask"]: r for r in metrics.evaluate(acts, metrics.Settings(partitions=(p,), exact=False))}
        for family in ("reference", "window", "a-shape", "strided", "top-k-row"):
            assert records[family]["recall_mean"] <= records["top-n"]["recall_mean"] + 1e-12
        assert records["reference"]["recall_mean"] <= records["top-k-row"]["recall_mean"] + 1e-12


def test_window_ties_go_to_later_queries():
    t = 6
    m = mk.window(t, 6 + 2)  # the diagonal, then two of the first sub-diagonal
    assert m.sum() == 8 and m[5, 4] and m[4, 3] and not m[3, 2] and not m[1, 0]
    assert not np.any(np.triu(m, 1))


def test_a_shape_takes_sink_columns_first():
    t = 10
    m = mk.a_shape(t, 4 * t - 6 + t - 4)
    assert m[:, :4][np.tril_indices(t, 0, 4)].all()
    assert all(m[i, i] for i in range(4, t))


def test_strided_is_a_window_plus_every_lth_key():
    t, n = 64, 700
    stride = mk.stride_for(t, n)
    m = mk.strided(t, n)
    i, j = np.tril_indices(t)
    core = ((i - j) < stride) | ((i - j) % stride == 0)
    assert m[i[core], j[core]].all() and m.sum() == n


def test_grouped_query_heads_use_consecutive_kv_heads():
    rng = np.random.default_rng(7)
    q = rng.normal(size=(1, 4, 24, 8)).astype(np.float32)
    k = rng.normal(size=(1, 2, 24, 8)).astype(np.float32)
    v = rng.normal(size=(1, 2, 24, 8)).astype(np.float32)
    acts = metrics.check_activations(q, k, v)
    probs, out, _ = metrics.dense_layer(acts.q[0], acts.k[0], acts.v[0], acts.scale)
    for h in range(4):
        kv = h // 2
        for i in (0, 11, 23):
            p = row_softmax(q[0, h, i], k[0, kv], i, acts.scale)
            assert probs[h, i, : i + 1] == pytest.approx(p, rel=1e-12)
            assert out[h, i] == pytest.approx(np.asarray(p) @ v[0, kv, : i + 1].astype(np.float64), rel=1e-9)


def test_a_row_without_positions_outputs_zeros():
    probs = np.full((1, 2, 2), 0.5)
    probs[0, 0] = (1.0, 0.0)
    v = np.array([[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]])
    out = np.einsum("hij,hjd->hid", probs, v)
    keys = np.array([[[0, 0], [1, 0]]], np.int32)
    cuts = np.array([[[0, 2]], [[0, 1]]], np.int32)  # row 0 without keys; row 1 all, then only key 1
    recall, err2, saved = kernels.prefix_errors(probs, v, out, keys, cuts, saves=[1])
    assert recall.tolist() == [[1.0], [0.5]]
    assert err2[0, 0] == pytest.approx((out[0, 0] ** 2).sum(), rel=1e-15)
    assert err2[1, 0] == pytest.approx((out[0, 0] ** 2).sum() + ((v[0, 1] - out[0, 1]) ** 2).sum(), rel=1e-15)
    assert saved[0, 0, 0].tolist() == [0.0, 0.0, 0.0] and saved[0, 0, 1].tolist() == [3.0, 2.0, 1.0]
    # keys of a mask's own beyond its prefix: row 0 gets key 0 back, row 1 key 0 besides key 1
    extra_keys, extra_cuts = np.zeros((2, 2, 1), np.int32), np.array([[1, 0], [0, 1]], np.int32)
    recall, err2, saved = kernels.prefix_errors(probs, v, out, keys, cuts, extra_keys, extra_cuts, saves=[1])
    assert recall.tolist() == [[2.0], [1.0]] and err2[0, 0] == pytest.approx(0, abs=1e-28)


def test_the_figures_are_mains_to_1e_9(acts):
    """Figures of the masked-copy engine this one replaced (main at 1c81c57, stored):
    the same to 1e-9, int8 kernel's included, for every family and partition count."""
    stored = json.loads((DATA / "fixture_figures_main.json").read_text())
    for sinks, partitions in ((1, (2, 3, 4, 8, 16)), (3, (5, 7))):
        got = metrics.evaluate(acts, metrics.Settings(partitions=partitions, sinks=sinks))
        want = stored[f"sinks={sinks}"]
        assert [(r["partitions"], r["mask"]) for r in got] == [(r["partitions"], r["mask"]) for r in want]
        for g, w in zip(got, want):
            assert g.keys() == w.keys()
            for name, value in w.items():
                if isinstance(value, (list, float)):
                    assert np.asarray(g[name]) == pytest.approx(np.asarray(value), abs=1e-9, rel=0), (g["mask"], name)
                else:
                    assert g[name] == value, (g["mask"], name)


def test_exact_path_error_is_small_beside_the_masks(acts):
    rec = metrics.evaluate(acts, metrics.Settings(partitions=(4,), families=("reference",)))[0]
    assert 0 < rec["int8_err_vs_mask_median"] < 0.1
    assert rec["int8_err_vs_dense_median"] == pytest.approx(rec["out_err_median"], abs=0.1)


def test_the_evaluation_runs_blas_on_one_thread_whatever_the_default(acts, monkeypatch):
    """Threaded BLAS spins on these small products (4-5x slower measured): mcsa sets one
    thread per worker itself, and gives the default back afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen, dense = [], metrics.dense_layer

    def spy(*args):
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return dense(*args)

    monkeypatch.setattr(metrics, "dense_layer", spy)
    with threadpool_limits(2, user_api="blas"):
        metrics.evaluate(acts, metrics.Settings(partitions=(2,), exact=False))
        after = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    assert seen and all(threads == {1} for threads in seen) and after == {2}


def test_a_failing_layer_stops_the_evaluation_without_running_the_rest(acts, monkeypatch):
    ran, layer = [], metrics._layer

    def failing(s, refs, walks, text, index):
        ran.append(index)
        if len(ran) == 1:
            raise ValueError("layer 3: out of range")
        return layer(s, refs, walks, text, index)

    monkeypatch.setattr(metrics, "_layer", failing)
    many = metrics.Activations(np.repeat(acts.q, 100, axis=0), np.repeat(acts.k, 100, axis=0),
                               np.repeat(acts.v, 100, axis=0), np.arange(200), acts.scale)
    with pytest.raises(ValueError, match="out of range"):
        metrics.evaluate(many, metrics.Settings(partitions=(2,), exact=False))
    assert len(ran) < 200  # the pending layers were cancelled


def test_quantise_is_symmetric_per_tensor():
    x = np.array([[-2.0, 1.0], [0.5, 2.0]])
    values, step = metrics.quantise(x)
    assert step == 2.0 / 127 and values.tolist() == [[-127, 64], [32, 127]]


# ---- the command ------------------------------------------------------------------------------

def test_cli_json_gives_the_library_records():
    result = run("quality", "--activations", FIXTURE, "--partitions", "2,4,8", "--sinks", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    want = metrics.evaluate(metrics.load_activations(FIXTURE), metrics.Settings(partitions=(2, 4, 8)))
    assert doc["results"] == json.loads(json.dumps(want))
    assert doc["seq_len"] == 128 and doc["heads"] == 3 and doc["kv_heads"] == 1
    assert {(r["partitions"], r["mask"]) for r in doc["results"]} == {
        (p, f) for p in (2, 4, 8) for f in mk.FAMILIES}


def test_cli_table_csv_and_plot(tmp_path):
    png = tmp_path / "q.png"
    table = run("quality", "--activations", FIXTURE, "--partitions", "3", "--no-exact", "--plot", png)
    assert table.exit_code == 0 and "reference+sinks" in table.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "q.csv"
    result = run("quality", "--activations", FIXTURE, "--partitions", "3", "--masks", "reference,window",
                 "--format", "csv", "-o", out)
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["mask"] for r in rows] == ["reference", "window"] and "recall_layer_20" in rows[0]


def test_cli_pools_several_files(tmp_path):
    result = run("quality", "--activations", FIXTURE, "--activations", FIXTURE, "--partitions", "4",
                 "--no-exact", "--format", "json")
    single = run("quality", "--activations", FIXTURE, "--partitions", "4", "--no-exact", "--format", "json")
    for two, one in zip(json.loads(result.stdout)["results"], json.loads(single.stdout)["results"]):
        assert two["positions"] == one["positions"]
        for name in ("recall_mean", "recall_min_head", "out_err_median"):
            assert two[name] == pytest.approx(one[name], rel=1e-12)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, message", [
    ("not-npz", "not a readable .npz"),
    ("truncated", "not a readable .npz"),
    ("npy", "not an archive"),
    ("no-v", "no array v"),
    ("shape", "must have shape (layers, heads, T, D)"),
    ("heads", "not a multiple of the 2 kv heads"),
    ("nan", "NaN"),
    ("scale", "scale must be one positive real number"),
    ("scale-text", "scale must be one positive real number, got array('x'"),
    ("scale-bool", "scale must be one positive real number, got array(True"),
    ("scale-complex", "scale must be one positive real number, got array(1.+1.j"),
    ("no-layers", "layers, heads, T and D must be positive"),
    ("overflowing-shape", "not a readable .npz"),
    ("huge-scale", "layer 0 head 0: the int8 kernel's f32 scale"),
    ("huge-scale-dense", "layer 0: the float64 reference overflows"),
    ("ints", "must be a float array"),
    ("zero-v", "is all zeros"),
    ("huge", "promises 4,398,046,511,104 bytes"),
])
def test_cli_refuses_bad_activations_naming_the_file(tmp_path, case, message):
    f = np.zeros((1, 3, 20, 4), np.float32)
    kv = np.zeros((1, 1, 20, 4), np.float32)
    ones = kv + 1
    path = tmp_path / "a.npz"
    if case == "not-npz":
        path.write_text("hello")
    elif case == "truncated":
        _npz(path, q=f, k=kv, v=ones)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "npy":
        np.save(tmp_path / "a.npy", f)
        (tmp_path / "a.npy").rename(path)
    elif case == "no-v":
        _npz(path, q=f, k=kv)
    elif case == "shape":
        _npz(path, q=f[0], k=kv, v=ones)
    elif case == "heads":
        _npz(path, q=f, k=np.zeros((1, 2, 20, 4), np.float32), v=np.zeros((1, 2, 20, 4), np.float32))
    elif case == "nan":
        _npz(path, q=np.full_like(f, np.nan), k=kv, v=ones)
    elif case == "scale":
        _npz(path, q=f, k=kv, v=ones, scale=np.float64(-1))
    elif case.startswith("scale-"):
        _npz(path, q=f, k=kv, v=ones, scale={"text": "x", "bool": True, "complex": 1 + 1j}[case[6:]])
    elif case.startswith("huge-scale"):
        _npz(path, q=f + 1, k=kv + 1, v=ones, scale=np.float64(1e307 if case == "huge-scale" else 1e308))
    elif case == "no-layers":
        _npz(path, q=f[:0], k=kv[:0], v=ones[:0])
    elif case == "ints":
        _npz(path, q=f.astype(np.int8), k=kv, v=ones)
    elif case in ("huge", "overflowing-shape"):
        _npz(path, q=f, k=kv, v=ones)
        member = io.BytesIO()
        shape = (1, 1, 2**20, 2**20) if case == "huge" else (10**23, 0)
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("tokens.npy", member.getvalue() + bytes(100))
    else:
        _npz(path, q=f, k=kv, v=kv)
    result = run("quality", "--activations", path, *(["--no-exact"] if case == "huge-scale-dense" else []))
    assert result.exit_code == 2
    assert message in result.output and str(path) in result.output


@pytest.mark.parametrize("args, message", [
    ((), "--activations"),
    (("--partitions", "1"), "2 or more partitions"),
    (("--partitions", "x"), "'x': write counts as 2,4,8 or 2..16 or 2,4..8,16"),
    (("--partitions", "2..70000"), "2..70000: a partition count is a u16 (0..=65535)"),
    (("--masks", "reference,nope"), "unknown mask nope"),
    (("--gate", "{"), "--gate: not JSON"),
    (("--gate", '{"lambda": -1}'), "--gate: lambda must be in 0..=4294967295 (u32), got -1"),
    (("--gate", '{"lambda": 1}'), "a --gate given without --partitions brings its own partition_count"),
    (("--lambda-prev", "4294967296"), "--lambda-prev"),
    (("--target", "nowhere"), "unknown target"),
])
def test_cli_refuses_bad_options(args, message):
    extra = () if args == () else ("--activations", FIXTURE)
    result = run("quality", *extra, *args)
    assert result.exit_code == 2 and message in result.output


def test_cli_refuses_texts_it_cannot_pool_naming_both_and_their_shapes(tmp_path):
    a = metrics.load_activations(FIXTURE)
    short = _npz(tmp_path / "short.npz", q=a.q[:, :, :64], k=a.k[:, :, :64], v=a.v[:, :, :64], layers=a.layers)
    result = run("quality", "--activations", FIXTURE, "--activations", short)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (f"cannot pool {FIXTURE} (2 layers (ids 3, 20) x 3 heads (1 kv) x T=128 x D=64) with {short} "
            "(2 layers (ids 3, 20) x 3 heads (1 kv) x T=64 x D=64): pooled texts need the same layers, heads, T and D"
            ) in result.stderr
    other = _npz(tmp_path / "other.npz", q=a.q, k=a.k, v=a.v)  # layers 0, 1: not the same layers
    result = run("quality", "--activations", FIXTURE, "--activations", other)
    assert result.exit_code == 2 and "(2 layers x 3 heads (1 kv) x T=128 x D=64)" in result.stderr


@pytest.mark.parametrize("t, partitions, said", [
    (10, "2,4", "warning: T=10: the sparse path needs seq_len >= 16, so for P=2,4 the reference is the full-mask "
                "fallback: the reference holds all 55 causal positions and every mask of its size keeps all "
                "attention (density 1.0, recall 1.0)"),
    (20, "2,32", "warning: T=20: P=32 leaves partitions too short to skip any position: the reference holds all 210 "
                 "causal positions"),
])
def test_texts_too_short_for_the_masks_are_said_on_one_line(tmp_path, t, partitions, said):
    a = metrics.load_activations(FIXTURE)
    path = _npz(tmp_path / "short.npz", q=a.q[:, :, :t], k=a.k[:, :, :t], v=a.v[:, :, :t])
    result = run("quality", "--activations", path, "--partitions", partitions, "--format", "json")
    assert result.exit_code == 0 and said in result.stderr and len(result.stderr.splitlines()) == 1
    full = [r for r in json.loads(result.stdout)["results"] if r["partitions"] == int(partitions.split(",")[-1])]
    assert all(r["density"] == 1.0 and r["recall_mean"] == pytest.approx(1.0) for r in full)
    quiet = run("quality", "--activations", FIXTURE, "--partitions", "2,4,8", "--no-exact")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_partitions_take_the_plan_syntax():
    ranged = run("quality", "--activations", FIXTURE, "--partitions", "2..4,8", "--no-exact", "--format", "json")
    listed = run("quality", "--activations", FIXTURE, "--partitions", "8,2,3,4", "--no-exact", "--format", "json")
    assert ranged.exit_code == 0 and json.loads(ranged.stdout)["results"] == json.loads(listed.stdout)["results"]
    assert [r["partitions"] for r in json.loads(ranged.stdout)["results"]][::7] == [2, 3, 4, 8]


def test_capture_refuses_bad_input(tmp_path):
    bogus = tmp_path / "m.gguf"
    bogus.write_bytes(b"not a gguf at all")
    text = tmp_path / "t.txt"
    text.write_text("hello")
    result = run("quality", "capture", "--model", bogus, "--text", text, "-o", tmp_path / "a.npz")
    assert result.exit_code == 2 and "not a readable GGUF" in result.output and str(bogus) in result.output
    both = run("quality", "capture", "--model", bogus, "--text", text, "--tokens", text, "-o", tmp_path / "a.npz")
    assert both.exit_code == 2 and "exactly one of --text and --tokens" in both.output
    assert not (tmp_path / "a.npz").exists()
    for content, message in (("[1, -2]", "non-negative token ids"), ("{", "not JSON")):
        text.write_text(content)
        result = run("quality", "capture", "--model", bogus, "--tokens", text, "-o", tmp_path / "a.npz")
        assert result.exit_code == 2 and str(text) in result.output, result.output


def test_texts_are_512_token_ids_with_a_licence():
    doc = json.loads((DATA / "texts.json").read_text())
    assert len(doc["texts"]) == 8 and len({t["kind"] for t in doc["texts"]}) == 8
    for t in doc["texts"]:
        assert len(t["ids"]) == 512 and all(0 <= i < 49152 for i in t["ids"]) and t["licence"]


@pytest.mark.parametrize("heads, kv_heads, t", [(1, 1, 64), (4, 2, 192), (9, 3, 128)])
def test_the_memory_estimate_bounds_the_evaluation(heads, kv_heads, t):
    """tracemalloc sees every NumPy allocation: its peak stays under the estimate
    that refuses too large activations."""
    import tracemalloc

    rng = np.random.default_rng(t)
    q, k, v = (rng.standard_normal((1, h, t, 16)).astype(np.float32) for h in (heads, kv_heads, kv_heads))
    acts = metrics.check_activations(q, k, v)
    metrics.evaluate(acts, metrics.Settings(partitions=(2,)))  # compile first
    partitions = tuple(range(2, 2 + 3 * heads))  # many partition counts: their masks add up
    tracemalloc.start()
    try:
        metrics.evaluate(acts, metrics.Settings(partitions=partitions))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= metrics.evaluation_bytes(heads, t, len(partitions), metrics.WORKERS)


def test_arrays_larger_than_memory_are_refused_before_reading(tmp_path, monkeypatch):
    path = _npz(tmp_path / "a.npz", q=np.ones((1, 1, 4096, 64), np.float32), k=np.ones((1, 1, 4096, 64), np.float32),
                v=np.ones((1, 1, 4096, 64), np.float32))
    monkeypatch.setattr(metrics, "available_memory", lambda: 2 << 20)
    result = run("quality", "--activations", path)
    assert result.exit_code == 2
    assert f"{path}: its arrays needs about 3.0 MiB of memory, more than the 2.0 MiB available" in result.output


def test_activations_too_large_for_this_machine_are_refused_before_any_work(tmp_path, monkeypatch):
    path = tmp_path / "long.npz"
    _npz(path, q=np.ones((1, 9, 4000, 1), np.float16), k=np.ones((1, 3, 4000, 1), np.float16),
         v=np.ones((1, 3, 4000, 1), np.float16))
    monkeypatch.setattr(metrics, "available_memory", lambda: 4 << 30)
    result = run("quality", "--activations", path)
    assert result.exit_code == 2
    assert ("evaluating 9 heads over T=4000 tokens needs about 7.4 GiB of memory, more than the 4.0 GiB "
            "available; use activations of fewer tokens") in result.output


def test_a_missing_output_folder_is_refused_before_the_plot_is_written(tmp_path):
    result = run("quality", "--activations", FIXTURE, "--plot", tmp_path / "p.png", "-o", tmp_path / "no" / "r.txt")
    assert result.exit_code == 2 and "No such file or directory" in result.output and list(tmp_path.iterdir()) == []


def test_cli_takes_the_gate_as_every_command_does():
    """--lambda and the other field options, or a recorded --gate whose partition_count is the P."""
    def gate_and_ps(*args):
        result = run("quality", "--activations", FIXTURE, "--no-exact", "--format", "json", "--masks", "reference",
                     *args)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        return out["gate"], sorted({r["partitions"] for r in out["results"]})

    assert gate_and_ps() == (mk.DEFAULT_GATE.to_dict(), [2, 4, 8])
    gate, ps = gate_and_ps("--lambda", 100, "--partitions", "2..3")
    assert (gate["lambda"], gate["lambda_prev"], ps) == (100, 200, [2, 3])
    recorded = {**mk.DEFAULT_GATE.to_dict(), "lambda": 90, "partition_count": 3}
    gate, ps = gate_and_ps("--gate", json.dumps(recorded))
    assert (gate["lambda"], ps) == (90, [3])
