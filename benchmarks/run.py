"""Run every benchmark (benchmarks/bench_*.py) in turn and print their tables.

Each benchmark measures against a baseline in the same run, because these machines are
shared and noisy; copy the tables into docs/BENCHMARKS.md with the date and machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for bench in sorted(here.glob("bench_*.py")):
        print(f"\n# {bench.name}\n", flush=True)
        if subprocess.run([sys.executable, str(bench)], check=False).returncode != 0:
            failed.append(bench.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
