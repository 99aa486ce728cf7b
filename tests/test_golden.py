"""Every golden case, every build: the same bits, positions and panics as the Rust module."""

import pytest

from mcsa import Target
from mcsa.app.verify import differences, expected_for, read_cases, simulate

from .conftest import BUILDS, GOLDEN

CASES = {kind: list(read_cases(GOLDEN / f"{kind}.jsonl.gz")) for kind in ("density", "scalar", "full", "masks", "attention")}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("kind", list(CASES))
def test_golden(kind, build):
    target = Target.named(build)
    failures = []
    for line, case in CASES[kind]:
        diff = differences(expected_for(case, build), simulate(kind, case, target))
        if diff:
            failures.append(f"{kind}.jsonl.gz:{line}: " + "; ".join(diff))
    assert not failures, f"{len(failures)} of {len(CASES[kind])} cases differ:\n" + "\n".join(failures[:10])


def test_golden_covers_all_kinds():
    assert {k: len(v) for k, v in CASES.items()} == {
        "density": 3000, "scalar": 400, "full": 50, "masks": 1560, "attention": 608,
    }
