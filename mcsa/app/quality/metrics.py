"""How much dense attention a mask keeps: recall and output error on real activations.

Dense reference: causal ``softmax(q k^T * scale) v`` in float64. For a mask M:

* recall of a row = the dense probability mass on the row's mask positions (0 for
  a row without positions); a head's recall = mean over its T rows;
  ``recall_mean`` = mean over all heads and layers;
* output error of a head = ||O_M - O||_F / ||O||_F, with O_M the softmax
  renormalised over M (a row without positions outputs zeros);
  ``out_err_median`` = median over heads and layers.

The dense reference is batched over the heads of a layer with matrix products;
the masks' sums walk each row's keys once for all masks (:mod:`.kernels`). Layers
run on :data:`WORKERS` threads with one BLAS thread each. The float64 ``np.exp``
here is the analysis's reference, not a simulated kernel.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mcsa.app import arrays
from mcsa.core._jit import usable_cores
from mcsa.core.attention import MincutSparseAttention
from mcsa.core.mask import POSITION_BYTES
from mcsa.core.packets import GatePacket
from . import kernels, masks as mk

WORKERS = min(2, usable_cores())
"""Layers evaluated at once, each in a thread with one BLAS thread: the kernels release
the GIL, while threaded BLAS on these small products spins and runs several times slower."""

SLACK_BYTES = 64 << 20
"""What the memory estimates add for what does not grow with T (the int8 kernels, buffers)."""


class NotEnoughMemory(ValueError):
    """A computation would take more memory than this machine has available."""


def available_memory() -> int | None:
    """Bytes this process can still take: Linux's MemAvailable, else the physical
    memory, else None (unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, what: str, hint: str) -> None:
    """Refuse, before allocating, a computation that needs ``need`` bytes when less is available.

    Raises
    ------
    NotEnoughMemory
        ``{what} needs about N GiB (or MiB) of memory, more than the M GiB available; {hint}``.
    """
    have = available_memory()
    if have is not None and need > have:
        raise NotEnoughMemory(f"{what} needs about {_size(need)} of memory, more than the {_size(have)} "
                              f"available; {hint}")


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def evaluation_bytes(heads: int, t: int, partitions: int = 1, workers: int = 1) -> int:
    """An upper bound of :func:`evaluate`'s peak memory for ``heads`` query heads
    over ``t`` tokens and ``partitions`` partition counts, ``workers`` layers at a
    time: per layer float64 (heads, T, T) probabilities and their key orders, and
    the masks and key orders of each partition count (measured with tracemalloc at
    9 heads, 5 partition counts, T=512: 276 bytes per T^2 for one worker, 510 for
    two; the bound says 508 and 904). Refused above the bound for one worker; fewer
    workers run when that is all the memory allows."""
    return (44 * heads * workers + 8 * partitions + 72) * t * t + SLACK_BYTES


@dataclass
class Activations:
    """q, k (after the position encoding) and v of shape (layers, heads, T, D);
    k and v may have fewer (kv) heads, each serving ``heads / kv_heads``
    consecutive query heads."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    layers: np.ndarray
    scale: float
    tokens: np.ndarray | None = None
    source: str = "activations"
    """Where they came from (a file), for messages."""

    @property
    def shape(self):
        layers, heads, t, d = self.q.shape
        return layers, heads, self.k.shape[1], t, d


def check_activations(q, k, v, layers=None, scale=None, tokens=None, where: str = "activations") -> Activations:
    """Validate and wrap activation arrays.

    Raises
    ------
    ValueError
        Naming ``where`` and the array at fault.
    """
    arrays = {}
    for name, arr in (("q", q), ("k", k), ("v", v)):
        arr = np.asarray(arr)
        if arr.dtype.kind != "f":
            raise ValueError(f"{where}: {name} must be a float array, got dtype {arr.dtype}")
        if arr.ndim != 4:
            raise ValueError(f"{where}: {name} must have shape (layers, heads, T, D), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: {name} holds NaN or infinite values")
        arrays[name] = arr
    n_layers, heads, t, d = arrays["q"].shape
    kv = arrays["k"].shape[1]
    for name in ("k", "v"):
        shape = arrays[name].shape
        if shape[0] != n_layers or shape[2:] != (t, d):
            raise ValueError(f"{where}: {name} has shape {shape}; q has {arrays['q'].shape} "
                             "(layers, T and D must agree)")
    if arrays["v"].shape[1] != kv:
        raise ValueError(f"{where}: k has {kv} heads but v has {arrays['v'].shape[1]}")
    if kv == 0 or heads % kv:
        raise ValueError(f"{where}: q has {heads} heads, not a multiple of the {kv} kv heads")
    if t == 0 or d == 0 or n_layers == 0 or heads == 0:
        raise ValueError(f"{where}: layers, heads, T and D must be positive, got shape {arrays['q'].shape}")
    if t > 1 << 16:
        raise ValueError(f"{where}: T={t} is more than a u16 mask can index (65536)")
    silent = np.argwhere(~np.any(arrays["v"] != 0, axis=(2, 3)))
    if silent.size:
        raise ValueError(f"{where}: v of layer index {silent[0][0]}, kv head {silent[0][1]} is all zeros "
                         "(the dense output is zero and its relative error undefined)")
    layer_ids = np.arange(n_layers) if layers is None else np.asarray(layers).reshape(-1)
    if layer_ids.size != n_layers or layer_ids.dtype.kind not in "iu":
        raise ValueError(f"{where}: layers must hold {n_layers} integers, got {layer_ids.tolist()!r:.80}")
    if scale is None:
        scale = 1.0 / np.sqrt(d)
    given = np.asarray(scale)
    scale = float(given.reshape(-1)[0]) if given.size == 1 and given.dtype.kind in "iuf" else None
    if scale is None or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{where}: scale must be one positive real number, got {given!r:.60}")
    return Activations(arrays["q"], arrays["k"], arrays["v"], layer_ids, scale,
                       None if tokens is None else np.asarray(tokens), where)


def load_activations(path: str | Path) -> Activations:
    """Read an ``.npz`` with ``q``, ``k``, ``v`` and optional ``layers``, ``tokens``, ``scale``.

    Raises
    ------
    UnreadableArray
        If the file is not an npz of plain arrays (:func:`mcsa.app.arrays.read_npz`).
    ValueError
        If it misses an array, or the arrays disagree.
    NotEnoughMemory
        If its arrays would not fit in the memory available.
    OSError
        If the file cannot be read.
    """
    path = str(path)
    if arrays.sniff(path) == "npy":
        raise arrays.UnreadableArray(path, None, "a single array, not an archive of q, k and v")
    found, names = arrays.read_npz(path, ("q", "k", "v", "layers", "scale", "tokens"), lambda promised: check_memory(
        promised, f"{path}: its arrays", "capture fewer tokens or layers"))
    missing = [n for n in ("q", "k", "v") if n not in found]
    if missing:
        raise ValueError(f"{path}: no array {', '.join(missing)} (has {', '.join(names) or 'none'})")
    return check_activations(**found, where=path)


def save_activations(path, acts: Activations) -> None:
    """Write the activations file (float32 q, k, v; layers; scale; tokens when known)."""
    extra = {} if acts.tokens is None else {"tokens": acts.tokens}
    np.savez_compressed(path, q=acts.q.astype(np.float32), k=acts.k.astype(np.float32),
                        v=acts.v.astype(np.float32), layers=acts.layers, scale=np.float64(acts.scale), **extra)


def expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    """(kv_heads, T, D) to (heads, T, D): each kv head serves consecutive query heads."""
    return np.repeat(x, heads // x.shape[0], axis=0)


def dense_layer(q, k, v, scale):
    """Causal float64 attention of one layer: probabilities (H, T, T) and output (H, T, D)."""
    heads, t, _ = q.shape
    kx = expand_kv(k.astype(np.float64), heads)
    vx = expand_kv(v.astype(np.float64), heads)
    probs = q.astype(np.float64) @ kx.transpose(0, 2, 1)
    probs *= scale
    np.copyto(probs, -np.inf, where=~np.tril(np.ones((t, t), bool)))
    probs -= probs.max(axis=-1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs, probs @ vx, vx


def relative_error(got, want):
    """||got - want||_F / ||want||_F per head (axis 0)."""
    return np.sqrt(((got - want) ** 2).sum(axis=(-2, -1))) / np.sqrt((want ** 2).sum(axis=(-2, -1)))


def quantise(x: np.ndarray):
    """Per-tensor symmetric int8: ``(values, step)`` with ``x ~ values * step``."""
    top = float(np.abs(x).max())
    step = top / 127.0 if top > 0 else 1.0
    return np.clip(np.rint(x / step), -127, 127).astype(np.int8), step


def exact_errors(sim, sparse_masks: list, q, k, v, scale, out, masked_outs, where: str = "") -> list[tuple]:
    """The target's int8 ``sparse_attention`` per head (q, k, v quantised per head
    tensor, once for every mask): for each mask, its error against dense float
    attention and against float attention over the same mask (``masked_outs``).

    Raises
    ------
    ValueError
        ``{where} head H: ...`` if the kernel's f32 scale (scale x q step x k step) overflows f32.
    """
    heads, t, d = q.shape
    got = np.empty((len(sparse_masks), heads, t, d))
    for h in range(heads):
        kv = h // (heads // k.shape[0])
        (qi, qs), (ki, ks), (vi, vs) = quantise(q[h]), quantise(k[kv]), quantise(v[kv])
        with np.errstate(over="ignore"):
            scale32 = np.float32(scale * qs * ks)
        if not np.isfinite(scale32):
            raise ValueError(f"{where} head {h}: the int8 kernel's f32 scale (scale x q step x k step = "
                             f"{scale * qs * ks:.3g}) overflows f32; leave the exact path out (--no-exact)")
        for m, sparse_mask in enumerate(sparse_masks):
            got[m, h] = sim.sparse_attention(qi, ki, vi, sparse_mask, d, scale32).reshape(t, d).astype(np.float64) * vs
    return [(relative_error(g, out), relative_error(g, masked)) for g, masked in zip(got, masked_outs)]


@dataclass
class Settings:
    """What to compare: partition counts, sinks, gate, simulator, exact path."""

    partitions: tuple = (2, 4, 8)
    sinks: int = 1
    gate: GatePacket = mk.DEFAULT_GATE
    sim: MincutSparseAttention = field(default_factory=MincutSparseAttention)
    exact: bool = True
    families: tuple = mk.FAMILIES


@dataclass
class _Walk:
    """Masks that are prefixes of one key order per row, each plus keys of its own
    (see :mod:`.kernels`): ``keys`` (1 or H, T, K), ``cuts`` (S, 1 or H, T), optional
    ``extra_keys`` (S, T, E) and ``extra_cuts`` (S, T), and the (P, family) of each mask."""

    keys: np.ndarray
    cuts: np.ndarray
    labels: list
    extra_keys: np.ndarray | None = None
    extra_cuts: np.ndarray | None = None

    def saves(self, exact: bool) -> list[int]:
        """The masks whose outputs the exact path compares with: the references."""
        return [c for c, (_, f) in enumerate(self.labels) if f == "reference"] if exact else []


def _fixed_walks(s: Settings, t: int, refs: dict) -> list[_Walk]:
    """The position-only masks of every partition count as one walk (built once per
    evaluation): each is its row's nearest keys plus a few of its own (the reference's
    boundary keys, the sinks, the strided pattern's farther multiples of l)."""
    sizes = {p: refs[p][0].num_positions for p in s.partitions}
    build = {"window": lambda p: mk.window(t, sizes[p]), "reference": lambda p: refs[p][1],
             "reference+sinks": lambda p: mk.with_sinks(refs[p][1], s.sinks),
             "a-shape": lambda p: mk.a_shape(t, sizes[p]), "strided": lambda p: mk.strided(t, sizes[p])}
    masks = {(p, f): build[f](p) for p in s.partitions for f in s.families if f in build}
    if not masks:
        return []
    split = [mk.distance_split(m) for m in masks.values()]
    extra = np.zeros((len(split), t, max(rest.shape[1] for _, rest, _ in split)), np.int32)
    for n, (_, rest, _) in enumerate(split):
        extra[n, :, : rest.shape[1]] = rest
    return [_Walk(mk.distance_keys(t)[None], np.stack([n for n, _, _ in split])[:, None], list(masks), extra,
                  np.stack([c for _, _, c in split]))]


def _oracle_walk(s: Settings, probs: np.ndarray, refs: dict) -> list[_Walk]:
    """The oracles of every partition count, one walk per head (from this layer's probabilities)."""
    topk = [p for p in s.partitions if "top-k-row" in s.families]
    topn = [p for p in s.partitions if "top-n" in s.families]
    if not topk and not topn:
        return []
    t = probs.shape[-1]
    row_cuts = np.array([refs[p][1].sum(axis=1) for p in topk], np.int64).reshape(-1, t)
    keys, cuts = kernels.oracle_orders(probs, row_cuts, [refs[p][0].num_positions for p in topn])
    return [_Walk(keys, cuts, [(p, "top-k-row") for p in topk] + [(p, "top-n") for p in topn])]


def _layer(s: Settings, refs: dict, walks: list[_Walk], acts: Activations, layer: int):
    """One layer of one text: ``({(P, family): (recall, error) per head}, {P: int8 errors per head},
    {(P, family): positions})``."""
    q, k, v = acts.q[layer], acts.k[layer], acts.v[layer]
    t = q.shape[1]
    where = f"{acts.source}, layer {acts.layers[layer]}"
    with np.errstate(over="ignore", invalid="ignore"):
        probs, out, vx = dense_layer(q, k, v, acts.scale)
    if not (np.isfinite(probs).all() and np.isfinite(out).all()):
        raise ValueError(f"{where}: the float64 reference overflows (scale {acts.scale:.3g} times q.k "
                         "goes beyond 1e308): these activations or this scale are out of range")
    norm = np.sqrt((out ** 2).sum(axis=(-2, -1)))
    figures, int8, positions = {}, {}, {}
    for walk in walks + _oracle_walk(s, probs, refs):
        saves = walk.saves(s.exact)
        recall, err2, saved = kernels.prefix_errors(probs, vx, out, walk.keys, walk.cuts, walk.extra_keys,
                                                    walk.extra_cuts, saves)
        for c, label in enumerate(walk.labels):
            figures[label] = recall[c] / t, np.sqrt(err2[c]) / norm
            own = 0 if walk.extra_cuts is None else int(walk.extra_cuts[c].sum())
            positions[label] = (int(walk.cuts[c].sum()) // walk.cuts.shape[1]) + own
        if saves:
            ps = [walk.labels[c][0] for c in saves]
            int8.update(zip(ps, exact_errors(s.sim, [refs[p][0] for p in ps], q, k, v, acts.scale, out, saved,
                                             where)))
    return figures, int8, positions


def describe(acts: Activations) -> str:
    """``30 layers x 9 heads (3 kv) x T=512 x D=64`` (and the layer ids when not 0..L-1)."""
    layers, heads, kv, t, d = acts.shape
    ids = acts.layers.tolist()
    named = "" if ids == list(range(layers)) else f" (ids {', '.join(map(str, ids[:6]))}{', ...' if layers > 6 else ''})"
    return f"{layers} layers{named} x {heads} heads ({kv} kv) x T={t} x D={d}"


def check_poolable(texts: list[Activations]) -> None:
    """Refuse texts whose heads cannot be pooled: other layers, heads, T or D than the first's.

    Raises
    ------
    ValueError
        ``cannot pool A (shape) with B (shape): ...``, one line.
    """
    first = texts[0]
    for acts in texts[1:]:
        if acts.shape != first.shape or not np.array_equal(acts.layers, first.layers):
            raise ValueError(f"cannot pool {first.source} ({describe(first)}) with {acts.source} ({describe(acts)}): "
                             "pooled texts need the same layers, heads, T and D")


def full_references(s: Settings, t: int) -> tuple[list[int], list[int]]:
    """The partition counts whose reference mask keeps every causal position over ``t``
    tokens: ``(on the full-mask fallback, on the sparse path but with every position)``.

    Raises
    ------
    TargetPanic
        From ``mask_stats`` on the simulated target.
    """
    fallback, whole = [], []
    for p in s.partitions:
        stats = s.sim.mask_stats(GatePacket(*s.gate.values()[:4], p, s.gate.flags), t)
        if not stats.sparse:
            fallback.append(p)
        elif stats.num_positions >= t * (t + 1) // 2:
            whole.append(p)
    return fallback, whole


def evaluate(texts: Activations | list[Activations], settings: Settings | None = None) -> list[dict]:
    """One record per (partition count, mask) over every text, layer and head:
    positions, density, bytes, ``recall_mean``, ``out_err_median``, per-layer
    figures, and for the reference mask on the exact path the int8 kernel's errors.

    Parameters
    ----------
    texts : Activations or list of Activations
        One or more texts of the same model and length; their heads are pooled.
    settings : Settings, optional

    Raises
    ------
    ValueError
        For texts of different shapes, a partition count the gate cannot carry
        or an unknown mask family.
    NotEnoughMemory
        If the float64 reference of one layer would not fit in the memory available.
    TargetPanic, MaskTooLarge
        From ``build_mask`` or ``sparse_attention`` on the simulated target.
    """
    s = Settings() if settings is None else settings
    texts = [texts] if isinstance(texts, Activations) else list(texts)
    if not texts:
        raise ValueError("no activations to evaluate")
    check_poolable(texts)
    unknown = [f for f in s.families if f not in mk.FAMILIES]
    if unknown:
        raise ValueError(f"unknown mask {', '.join(unknown)}; known: {', '.join(mk.FAMILIES)}")
    n_layers, heads, _, t, _ = texts[0].shape
    check_memory(evaluation_bytes(heads, t, len(s.partitions)), f"evaluating {heads} heads over T={t} tokens",
                 "use activations of fewer tokens (mcsa quality capture --max-tokens)")
    have = available_memory()
    workers = min(WORKERS, n_layers * len(texts))  # fewer when only one layer at a time fits
    while workers > 1 and have is not None and evaluation_bytes(heads, t, len(s.partitions), workers) > have:
        workers -= 1
    refs = {}
    for p in s.partitions:
        gate = GatePacket(*s.gate.values()[:4], p, s.gate.flags)
        refs[p] = mk.reference_mask(s.sim, gate, t)
    walks = _fixed_walks(s, t, refs)
    shape = (n_layers, len(texts), heads)
    res = {(p, f): {"recall": np.zeros(shape), "err": np.zeros(shape)} for p in s.partitions for f in s.families}
    exact = {p: (np.zeros(shape), np.zeros(shape)) for p in s.partitions} if s.exact else {}
    jobs = [(x, layer) for x in range(len(texts)) for layer in range(n_layers)]
    pool = ThreadPoolExecutor(workers)
    try:
        with threadpool_limits(1, user_api="blas"):
            done = pool.map(lambda job: _layer(s, refs, walks, texts[job[0]], job[1]), jobs)
            for (x, layer), (figures, int8, positions) in zip(jobs, done):
                for key, (recall, err) in figures.items():
                    res[key]["recall"][layer, x], res[key]["err"][layer, x] = recall, err
                for p, (vs_dense, vs_mask) in int8.items():
                    exact[p][0][layer, x], exact[p][1][layer, x] = vs_dense, vs_mask
    finally:  # an error or Ctrl-C: the layers not started are dropped, not waited for
        pool.shutdown(cancel_futures=True)
    causal = t * (t + 1) // 2
    records = []
    for p in s.partitions:
        for f in s.families:
            r = res[(p, f)]
            by_layer = r["err"].reshape(n_layers, -1)
            rec = {
                "partitions": p, "mask": f, "positions": positions[(p, f)],
                "density": positions[(p, f)] / causal, "mask_bytes": positions[(p, f)] * POSITION_BYTES,
                "recall_mean": float(r["recall"].mean()), "recall_min_head": float(r["recall"].min()),
                "out_err_median": float(np.median(r["err"])),
                "layers": [int(x) for x in texts[0].layers],
                "recall_by_layer": [float(x) for x in r["recall"].reshape(n_layers, -1).mean(axis=1)],
                "out_err_median_by_layer": [float(x) for x in np.median(by_layer, axis=1)],
            }
            if f == "reference" and s.exact:
                rec["int8_err_vs_dense_median"] = float(np.median(exact[p][0]))
                rec["int8_err_vs_mask_median"] = float(np.median(exact[p][1]))
            records.append(rec)
    return records
