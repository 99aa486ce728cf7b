import os
import platform
import sys
from pathlib import Path

# tests/test_threads.py compares 1 thread with several: give Numba two even on a one-core machine
# (before numba is imported; a larger NUMBA_NUM_THREADS from the environment is kept).
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
BUILDS = ("x86_64-release", "x86_64-debug", "wasm32-release", "wasm32-debug")


def pytest_report_header(config):
    return (
        f"platform: {platform.platform()} ({platform.machine()}), python {sys.version.split()[0]}, "
        f"numpy {np.__version__}, numba {numba.__version__}"
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: exhaustive checks (minutes); CI runs them")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


from hypothesis import settings  # noqa: E402

settings.register_profile("mcsa", derandomize=True, deadline=None, max_examples=150, print_blob=True)
settings.load_profile("mcsa")
