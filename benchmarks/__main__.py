"""`python -m benchmarks [module ...]`: run every benchmark module's `run()` and print one table."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from typing import Any

import benchmarks


def modules(names: list[str]) -> list[str]:
    """The benchmark modules to run: the ones named, or every module in the package."""
    found = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
    return [n for n in found if n in names] if names else found


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows (name, figure, target, holds) as a Markdown table."""
    print("| benchmark | figure | target | holds |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['figure']} | {row['target']} | {'yes' if row['holds'] else 'NO'} |")


def main(argv: list[str]) -> int:
    """Run the benchmarks; exit 1 if any target does not hold."""
    rows: list[dict[str, Any]] = []
    for name in modules(argv):
        module = importlib.import_module(f"benchmarks.{name}")
        run = getattr(module, "run", None)
        if run is None:
            continue
        started = time.perf_counter()
        for row in run():
            rows.append({**row, "name": f"{name}: {row['name']}"})
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_table(rows)
    return 0 if all(r["holds"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
