"""Start-up of the ``mcsa`` command next to its floors.

    python tools/bench_cli.py [--repeats 15]

Prints the machine and load, then the median wall time of each command line run
as a fresh process, the runs interleaved round-robin so that the machine's load
falls on all of them alike, each next to its floor: ``python -c pass`` and
``import click`` for ``--help`` and argument errors (limit 0.3 s; the commands that
run the simulator load NumPy for theirs, ``import numpy`` their floor), ``import numba,
numpy`` and that plus one call of a cached kernel (Numba sets up its compiler
context on the first call of any kernel, cached or not) for a real command.
Also says whether ``mcsa --help`` imported NumPy or Numba.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import machine  # noqa: E402

MCSA = [sys.executable, "-c", "from mcsa.cli import main; main()"]
KERNEL = "import numba\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n"


def runs(folder: str) -> dict[str, list[str]]:
    floor_call = [sys.executable, "-c", f"import sys; sys.path.insert(0, {folder!r}); import numpy, kernel; kernel.f(1)"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "mcsa --help": [*MCSA, "--help"],
        "mcsa mask --help": [*MCSA, "mask", "--help"],
        "mcsa maks (unknown command)": [*MCSA, "maks"],
        "mcsa mask --seq-len x (bad value)": [*MCSA, "mask", "--seq-len", "x"],
        "mcsa mask --partitions 2..x (bad list)": [*MCSA, "mask", "--seq-len", "8", "--partitions", "2..x"],
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "mcsa replay --help": [*MCSA, "replay", "--help"],
        "mcsa plan --help": [*MCSA, "plan", "--help"],
        "mcsa fit --dim -1 (bad value)": [*MCSA, "fit", "--dim", "-1"],
        "mcsa quality --help": [*MCSA, "quality", "--help"],
        "python -c 'import numba, numpy'": [sys.executable, "-c", "import numba, numpy"],
        "  ... and one cached kernel call": floor_call,
        "mcsa mask --seq-len 48 (warm)": [*MCSA, "mask", "--seq-len", "48", "--lambda", "100", "--partitions", "3"],
        "mcsa mask --target stm32f412 (unknown)": [*MCSA, "mask", "--seq-len", "48", "--target", "stm32f412"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "kernel.py").write_text(KERNEL)
        commands = runs(folder)
        for argv in commands.values():  # warm every cache (Numba's, the OS's) once
            subprocess.run(argv, capture_output=True)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, capture_output=True)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"load average after: {os.getloadavg()}; medians of {args.repeats} runs each, interleaved")
    width = max(map(len, medians))
    for name, m in medians.items():
        print(f"  {name:<{width}}  {m:6.3f} s")
    numba_floor, call_floor = medians["python -c 'import numba, numpy'"], medians["  ... and one cached kernel call"]
    mask = medians["mcsa mask --seq-len 48 (warm)"]
    print(f"mcsa --help: {medians['mcsa --help']:.3f} s (limit 0.3 s); warm mask / import numba, numpy = "
          f"{mask / numba_floor:.2f} (limit 1.3); warm mask / that plus one cached call = {mask / call_floor:.2f}")
    check = ("import sys; sys.argv = ['mcsa', '--help']\nfrom mcsa.cli import main\ntry:\n    main()\n"
             "except SystemExit:\n    pass\nprint('numpy' in sys.modules, 'numba' in sys.modules, file=sys.stderr)")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stderr.split()
    print(f"mcsa --help imported numpy: {loaded[0]}, numba: {loaded[1]}")


if __name__ == "__main__":
    main()
