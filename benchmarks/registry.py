"""Figures one benchmark module measures and another reads in the same run (`python -m benchmarks` runs the
modules in alphabetical order: `floor` before `turns`)."""

from __future__ import annotations

# B0's coaching turn at the stack's floor, per database: (untraced ms, traced ms) of CPU.
FLOOR: dict[str, tuple[float, float]] = {}
