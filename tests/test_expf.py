"""The three expf flavours against the golden outputs: a sample always, every input when slow."""

import gzip

import numpy as np
import pytest

from mcsa import ExpF, expf, fnv1a64

from .conftest import GOLDEN

FLAVOURS = [f.value for f in ExpF]


def _sample():
    with gzip.open(GOLDEN / "expf" / "sample.tsv.gz", "rt") as f:
        header, *rows = [line.split() for line in f.read().splitlines()]
    table = np.array([[int(x, 16) for x in row] for row in rows], np.uint64).astype(np.uint32)
    return header, table


def _chunks():
    header, *rows = [line.split("\t") for line in (GOLDEN / "expf" / "chunks.tsv").read_text().splitlines()]
    return header, rows


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sample_bits(flavour):
    header, table = _sample()
    x = table[:, 0].view(np.float32)
    want = table[:, header.index(flavour)]
    got = expf(x, flavour).view(np.uint32)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(hex(table[i, 0]), hex(got[i]), hex(want[i])) for i in bad[:5]]


def test_flavours_differ_where_the_readme_says():
    x = np.array([0xC27C65D9], np.uint32).view(np.float32)
    assert expf(x, "glibc-fma").view(np.uint32)[0] == 0x11FA2993
    assert expf(x, "musl").view(np.uint32)[0] == 0x11FA2992


def test_special_values():
    x = np.array([0.0, -0.0, -np.inf, np.nan, -104.0, -87.0], np.float32)
    for flavour in FLAVOURS:
        y = expf(x, flavour)
        assert y[:3].view(np.uint32).tolist() == [0x3F800000, 0x3F800000, 0]
        assert np.isnan(y[3]) and y[4] == 0 and 0 < y[5] < 1e-37


def test_expf_refuses_float64_and_unknown_flavour():
    with pytest.raises(TypeError, match="float32"):
        expf(np.zeros(3), "musl")
    with pytest.raises(ValueError, match="unknown expf flavour 'glibc'"):
        expf(np.zeros(3, np.float32), "glibc")


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_exhaustive_chunk_hashes(flavour):
    """All 2^31 non-positive inputs, 256 chunks of 2^23, against the golden FNV-1a hashes."""
    header, rows = _chunks()
    column = header.index(flavour)
    bad = []
    for row in rows:
        lo, hi = int(row[0], 16), int(row[1], 16)
        x = np.arange(lo, hi + 1, dtype=np.uint64).astype(np.uint32).view(np.float32)
        if fnv1a64(expf(x, flavour).view(np.uint32)) != int(row[column], 16):
            bad.append(row[0])
    assert len(rows) == 256 and not bad
