"""The float64 attention a run is measured against: the ideal the f32 kernel
approximates, over the same mask positions. Not an exact path (it uses NumPy's
float64 ``exp``); it is the yardstick for the error, not a simulation."""

from __future__ import annotations

import numpy as np

from .verify import f32_line


def float64_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: np.ndarray, dim: int,
                      scale: float) -> np.ndarray:
    """Masked softmax attention in float64 over ``positions`` ((query, key) pairs):
    for each query, softmax of ``scale * (q . k)`` over its keys, times their v rows.

    Parameters
    ----------
    q, k, v : numpy.ndarray
        Flat int8 arrays of ``seq_len * dim`` elements.
    positions : numpy.ndarray
        ``(N, 2)`` query and key indices below ``seq_len``.
    dim : int
        Head dimension, at least 1.
    scale : float

    Returns
    -------
    numpy.ndarray
        float64, ``seq_len * dim`` elements; rows with no key are 0.

    Raises
    ------
    ValueError
        If ``dim`` is below 1.
    """
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    seq_len = q.size // dim
    Q, K, V = (a.reshape(-1, dim).astype(np.float64) for a in (q, k, v))
    out = np.zeros((seq_len, dim))
    pos = positions[np.argsort(positions[:, 0], kind="stable")]
    starts = np.searchsorted(pos[:, 0], np.arange(seq_len + 1))
    for query in range(seq_len):
        keys = pos[starts[query]: starts[query + 1], 1].astype(np.int64)
        if keys.size:
            s = (K[keys] @ Q[query]) * float(scale)
            e = np.exp(s - s.max())
            out[query] = (e / e.sum()) @ V[keys]
    return out.reshape(-1)


def error_against(out: np.ndarray, reference: np.ndarray) -> dict:
    """How far the f32 ``out`` is from the float64 ``reference``.

    Returns
    -------
    dict
        ``max_abs_error`` (float), ``max_ulp_error`` (the largest distance in f32
        ULPs to the reference rounded to f32, an int; None if only one of them is
        NaN somewhere) and ``worst_index`` (where it is).
    """
    with np.errstate(over="ignore"):
        ref32 = reference.astype(np.float32)
    nan = np.isnan(out) | np.isnan(ref32)  # no ULP distance to a NaN: None when one side alone is NaN
    ulps = np.where(nan, 0, np.abs(f32_line(out.view(np.uint32)) - f32_line(ref32.view(np.uint32))))
    return {
        "max_abs_error": float(np.abs(out.astype(np.float64) - reference).max()) if out.size else 0.0,
        "max_ulp_error": None if (np.isnan(out) != np.isnan(ref32)).any() else int(ulps.max(initial=0)),
        "worst_index": int(np.argmax(ulps)) if ulps.size else 0,
    }
