"""How fast `bud` answers `--help`: the wall time of a fresh process (target: well under 0.5 s), median of several
runs, with the CPU time it used (user + system; on a shared, loaded machine the wall time waits for a core, the CPU
time does not) and the load average it ran under.

    .venv/bin/python -m bench.bench_cli [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["sim", "--help"], ["endpoints", "--help"], ["routes", "shift", "--help"],
            ["models", "--help"])
TARGET_S = 0.5


def bud_command() -> list[str]:
    """The installed `bud` script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "bud"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of argv, which must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    bud = bud_command()
    timed([*bud, "--help"])  # the first run fills the page cache; not counted
    print(f"bud --help timings, median of {runs} runs ({' '.join(bud)}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'command':<28} {'wall s':>8} {'cpu s':>8}  target < {TARGET_S} s wall")
    for args in COMMANDS:
        samples = [timed([*bud, *args]) for _ in range(runs)]
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        print(f"{'bud ' + ' '.join(args):<28} {wall:>8.3f} {cpu:>8.3f}  {'met' if wall < TARGET_S else 'NOT met'}")
    samples = [timed([sys.executable, "-c", "import typer"]) for _ in range(runs)]
    floor = 'python -c "import typer"'
    print(f"{floor:<28} {statistics.median(s[0] for s in samples):>8.3f} "
          f"{statistics.median(s[1] for s in samples):>8.3f}  (the floor of any typer CLI)")


if __name__ == "__main__":
    main()
