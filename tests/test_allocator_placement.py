"""The tlsf, freertos-heap4, newlib and esp-idf placement simulators against their real code.

``tests/golden/placement_allocators/`` holds what each allocator's own source, built on
the host, did with the same traces (README there): the first failing event, the peak,
and every block and hole at the failure or the end. Random traces are rebuilt here from
their seed by :func:`random_trace`; real step traces are stored whole.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model.placement import ALLOC, DEALLOC, EVENT_DTYPE, REALLOC

from .conftest import GOLDEN

DIR = GOLDEN / "placement_allocators"
MODULES = {"tlsf": "tlsf", "freertos-heap4": "freertos_heap4", "newlib": "newlib", "esp-idf": "esp_idf"}


def simulator(name):
    return importlib.import_module(f"firmware_model.placement.{MODULES[name]}").simulate


def random_trace(seed: int, n_events: int, usize_bits: int) -> np.ndarray:
    """A seeded trace shaped like a step: B-tree nodes coming and going, Vecs growing by
    realloc (doubling, sometimes shrinking), large temporaries, frees of recent and of
    random live blocks. Alignments are 2, 4 and the pointer size capped at 4 on 32-bit."""
    rng = np.random.default_rng(seed)
    w = usize_bits // 8
    nodes = (56, 152) if w == 8 else (52, 100)
    events, live, vecs = [], {}, []
    obj = 0
    while len(events) < n_events:
        r = rng.random()
        if r < 0.35:
            size = int(nodes[int(rng.integers(2))])
            events.append((ALLOC, obj, size, w))
            live[obj] = (size, w)
            obj += 1
        elif r < 0.5:
            if vecs and rng.random() < 0.7:
                o = vecs[int(rng.integers(len(vecs)))]
                size, align = live[o]
                new = min(2 * size, 24000 // align * align) if rng.random() < 0.8 else max(align, size // 2)
                events.append((REALLOC, o, new, align))
                live[o] = (new, align)
            else:
                align = int((2, 4, w)[int(rng.integers(3))])
                size = align * 4 * int(rng.integers(1, 8))
                events.append((ALLOC, obj, size, align))
                live[obj] = (size, align)
                vecs.append(obj)
                obj += 1
        elif r < 0.6:
            size = 4 * int(rng.integers(1, 4000))
            events.append((ALLOC, obj, size, 4))
            live[obj] = (size, 4)
            obj += 1
        elif live:
            keys = list(live)
            o = keys[int(rng.integers(len(keys)))] if rng.random() < 0.7 else keys[-1]
            size, align = live.pop(o)
            events.append((DEALLOC, o, size, align))
            if o in vecs:
                vecs.remove(o)
    return np.array(events, dtype=EVENT_DTYPE)


@functools.cache
def _read(name):
    with gzip.open(DIR / name, "rt") as f:
        return [json.loads(line) for line in f]


def _step_traces():
    return {t["name"]: np.array([tuple(e) for e in t["events"]], dtype=EVENT_DTYPE)
            for t in _read("step_traces.jsonl.gz")}


def trace_of(record, steps):
    t = record["trace"]
    if t["kind"] == "random":
        return random_trace(t["seed"], t["n_events"], record["usize_bits"])
    return steps[t["name"]]


@pytest.mark.parametrize("name", list(MODULES))
def test_every_golden_placement_of_the_real_allocator(name):
    """Failed event, peak, blocks and holes equal the real code's on every recorded point."""
    steps = _step_traces()
    simulate = simulator(name)
    records = [r for r in _read("results.jsonl.gz") if r["allocator"] == name]
    failures = []
    for r in records:
        p = simulate(trace_of(r, steps), r["heap_size"], r["usize_bits"])
        got = (p.failed_event, p.peak_used, p.blocks.tolist(), p.holes.tolist())
        want = (r["failed_event"], r["peak_used"], r["blocks"], r["holes"])
        if got != want:
            failures.append(f"{r['trace']} heap {r['heap_size']} {r['usize_bits']}-bit: "
                            f"{got[:2]} != {want[:2]}")
    assert len(records) >= 100 and not failures, "\n".join(failures[:10])


def test_golden_points_include_failures_and_fits():
    """The recorded points are not all one kind: each allocator has fits and failures,
    step traces and random ones, for every pointer width it models."""
    for name in MODULES:
        records = [r for r in _read("results.jsonl.gz") if r["allocator"] == name]
        widths = {32} if name == "esp-idf" else {32, 64}
        assert {r["usize_bits"] for r in records} == widths
        assert any(r["failed_event"] is None for r in records)
        assert any(r["failed_event"] is not None for r in records)
        assert {r["trace"]["kind"] for r in records} == {"random", "step"}


@pytest.mark.parametrize("name", list(MODULES))
@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), heap=st.integers(256, 1 << 17))
def test_blocks_and_holes_tile_the_arena(name, seed, heap):
    """Blocks and holes never overlap and stay inside the arena; the peak covers what is
    taken at the end; the live blocks are exactly the trace's live objects."""
    bits = 32 if name == "esp-idf" else 64 if seed % 2 else 32
    events = random_trace(seed, 400, bits)
    p = simulator(name)(events, heap, bits)
    regions = sorted([(int(o), int(s)) for o, s, _ in p.blocks] + [(int(o), int(s)) for o, s in p.holes])
    for (o1, s1), (o2, _) in zip(regions, regions[1:]):
        assert o1 + s1 <= o2
    assert all(o >= 0 and s > 0 and o + s <= heap for o, s in regions)
    assert p.peak_used >= heap - p.free_total
    end = len(events) if p.failed_event is None else p.failed_event
    live = set()
    for op, obj, _, _ in events[:end]:
        if op == ALLOC:
            live.add(int(obj))
        elif op == DEALLOC:
            live.remove(int(obj))
    assert sorted(live) == sorted(int(o) for o in p.blocks[:, 2])


@pytest.mark.parametrize("name", list(MODULES))
def test_inconsistent_traces_are_refused(name):
    """Freeing a block that is not live, allocating a live one, or a zero size is a
    ValueError naming the event."""
    bad = [
        [(ALLOC, 1, 16, 4), (DEALLOC, 2, 16, 4)],
        [(ALLOC, 1, 16, 4), (ALLOC, 1, 16, 4)],
        [(ALLOC, 1, 0, 4)],
    ]
    for events in bad:
        with pytest.raises(ValueError, match="event"):
            simulator(name)(np.array(events, dtype=EVENT_DTYPE), 4096, 32)
    with pytest.raises(TypeError):
        simulator(name)(np.zeros(3), 4096, 32)


def test_unmodelled_requests_are_refused():
    """Alignments past what each glue's malloc path serves, and 64-bit ESP-IDF."""
    events = np.array([(ALLOC, 1, 64, 16)], dtype=EVENT_DTYPE)
    for name in ("freertos-heap4", "newlib", "esp-idf"):
        with pytest.raises(ValueError, match="alignment"):
            simulator(name)(events, 4096, 32)
    with pytest.raises(ValueError, match="32-bit"):
        simulator("esp-idf")(np.array([(ALLOC, 1, 64, 8)], dtype=EVENT_DTYPE), 4096, 64)
