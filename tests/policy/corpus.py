"""Where the compatibility corpus lives and how to list its cases."""

from __future__ import annotations

import os
from pathlib import Path

#: ``../shared/compat/policy`` relative to the repository root, unless ``PYHEADSCALE_POLICY_CORPUS`` names it
#: (a git worktree's root has another parent than the main checkout's).
CORPUS_DIR = Path(
    os.environ.get("PYHEADSCALE_POLICY_CORPUS")
    or Path(__file__).resolve().parents[2].parent / "shared" / "compat" / "policy"
)


def case_files() -> list[Path]:
    """Every case file, sorted by category and id; empty when the corpus is absent."""
    if not CORPUS_DIR.is_dir():
        return []
    return sorted(CORPUS_DIR.glob("*/*.json"))
