"""Keep Rein's process on one CPU: its threads share one GIL, and handing it between cores costs more
than the second core gives (docs/PERFORMANCE.md: 15–20 % less CPU per turn; every SQLite query hops to
aiosqlite's thread and back, and Opik's sender runs beside the loop). Several replicas on one host each
take a different CPU."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def pin(choice: str) -> set[int] | None:
    """Apply `CPU_AFFINITY` ("auto", "off" or CPU numbers) to every thread of this process; the CPUs it
    now runs on, or None when nothing changed."""
    if choice == "off" or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if choice == "auto":
        if len(allowed) < 2:
            return None
        cpus = {allowed[os.getpid() % len(allowed)]}  # replicas started together spread over the CPUs
    else:
        cpus = {int(part) for part in choice.split(",")} & set(allowed)
        if not cpus:
            logger.warning("cpu.affinity_ignored wanted=%s allowed=%s", choice, allowed)
            return None
    for task in _threads():
        try:
            os.sched_setaffinity(task, cpus)
        except OSError:  # a thread that just ended
            continue
    logger.info("cpu.pinned cpus=%s", sorted(cpus))
    return cpus


def _threads() -> list[int]:
    """This process's thread ids (threads started later inherit the affinity of the one starting them)."""
    try:
        return [int(entry.name) for entry in Path("/proc/self/task").iterdir()]
    except OSError:
        return [0]
