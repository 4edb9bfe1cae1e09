"""Where the compatibility corpus lives and how to list its cases."""

from __future__ import annotations

from pathlib import Path

#: ``../shared/compat/policy`` relative to the repository root.
CORPUS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "compat" / "policy"


def case_files() -> list[Path]:
    """Every case file, sorted by category and id; empty when the corpus is absent."""
    if not CORPUS_DIR.is_dir():
        return []
    return sorted(CORPUS_DIR.glob("*/*.json"))
