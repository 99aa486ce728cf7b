import os
import platform
import pty
import subprocess
import sys
import threading
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


def on_terminal(*commands, stdout_too: bool = False, timeout: float = 300):
    """Run each command (the arguments of ``python -m mcsa``) in turn with stderr, and
    stdout too when ``stdout_too``, on one pseudo-terminal: what the terminal received,
    and each run (stdout captured when not on the terminal). The terminal is read while
    they run, so that it never fills."""
    leader, follower = pty.openpty()
    received = []

    def read():
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # (the follower closed)
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        runs = [subprocess.run([sys.executable, "-m", "mcsa", *map(str, command)], stderr=follower, timeout=timeout,
                               stdout=follower if stdout_too else subprocess.PIPE) for command in commands]
    finally:
        os.close(follower)
        reader.join(timeout)
        os.close(leader)
    return b"".join(received), runs


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


from hypothesis import settings  # noqa: E402

settings.register_profile("mcsa", derandomize=True, deadline=None, max_examples=150, print_blob=True)
settings.load_profile("mcsa")
