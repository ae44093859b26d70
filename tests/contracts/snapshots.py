"""Comparing generated documents with the committed ones, with a readable diff on failure."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from panthera.runtime.contracts import render

REPO = Path(__file__).resolve().parents[2]
MAX_DIFF_LINES = 80


def stale_files(directory: Path, documents: Mapping[str, dict[str, Any]]) -> list[str]:
    """What differs between ``directory/<name>.json`` and the rendered ``documents``."""
    problems: list[str] = []
    for name, document in documents.items():
        target = directory / f"{name}.json"
        label = str(target.relative_to(REPO)) if target.is_relative_to(REPO) else str(target)
        expected = render(document)
        if not target.exists():
            problems.append(f"{label}: missing")
            continue
        committed = target.read_text(encoding="utf-8")
        if committed != expected:
            diff = list(
                difflib.unified_diff(
                    committed.splitlines(),
                    expected.splitlines(),
                    fromfile=f"{label} (committed)",
                    tofile=f"{label} (generated)",
                    lineterm="",
                )
            )
            if len(diff) > MAX_DIFF_LINES:
                diff = [*diff[:MAX_DIFF_LINES], f"... {len(diff) - MAX_DIFF_LINES} more lines"]
            problems.append("\n".join(diff))
    if directory.is_dir():
        for stray in sorted(directory.glob("*.json")):
            if stray.stem not in documents:
                problems.append(f"{stray.name}: committed, but nothing generates it any more")
    return problems
