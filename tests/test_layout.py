"""The code's shape: modules by job, none of them long."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 500


def test_no_module_in_bot_pipeline_or_storage_is_over_500_lines() -> None:
    """Every module of bot/, pipeline/ and storage/ (Alembic migrations aside) has at most 500 lines."""
    modules = [path for package in ("bot", "pipeline", "storage") for path in (ROOT / package).rglob("*.py")
               if "migrations" not in path.relative_to(ROOT).parts]
    assert len(modules) > 50, "the walk found the packages' modules"
    lengths = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines()) for path in modules}
    assert {name: lines for name, lines in lengths.items() if lines > LIMIT} == {}
