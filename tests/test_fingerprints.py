"""A fast sample of tools/fingerprints.py's check: the outputs it fingerprints are unchanged.

The full check (every golden case on every preset, every fit, replay and command) is
``python tools/fingerprints.py``; after an intended change of output,
``python tools/fingerprints.py --update`` records the new fingerprints.
"""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).parent.parent / "tools" / "fingerprints.py"
spec = importlib.util.spec_from_file_location("fingerprints", TOOL)
fingerprints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fingerprints)

STORED = json.loads(fingerprints.STORE.read_text())
SAMPLE = [
    "cases/full/x86_64-release",
    "cases/full/wasm32-debug",
    "cases/full/heap32",
    "fit/stm32f411/linked-list",
    "fit/samd21/newlib",
    "replay/jsonl/trace.jsonl",
]


def test_every_fingerprint_is_recorded():
    assert sorted(fingerprints.all_jobs()) == sorted(STORED)


@pytest.mark.parametrize("name", SAMPLE)
def test_fingerprint_unchanged(name):
    digest, _ = fingerprints.compute(name)
    assert digest == STORED[name], f"{name} changed: run python tools/fingerprints.py --only '{name}' to see it"
