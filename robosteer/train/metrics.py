"""The training log: one row per logged step, appended to ``metrics.jsonl`` and ``metrics.csv``.

Columns: ``step, loss, lr, grad_norm, tokens_per_s, elapsed_s``. When a run resumes
from a checkpoint, rows after the checkpoint's step (written before an interruption)
are dropped first, so the files read as one uninterrupted run.

Usage::

    log = MetricsLog(out_dir)
    log.truncate(after_step=120)
    log.write({"step": 121, "loss": 1.9, ...})
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..files import atomic_write_text

COLUMNS: tuple[str, ...] = ("step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s")
OPTIONAL_COLUMNS: tuple[str, ...] = ("aux_loss",)  # written when a run has them (e.g. pretraining's state targets)


class MetricsLog:
    """Appends metric rows to ``<dir>/metrics.jsonl`` and ``<dir>/metrics.csv``."""

    def __init__(self, directory: str | Path) -> None:
        self.jsonl = Path(directory) / "metrics.jsonl"
        self.csv = Path(directory) / "metrics.csv"

    def rows(self) -> list[dict[str, Any]]:
        """Every row logged so far (from the JSONL file)."""
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate(self, after_step: int) -> None:
        """Keep only rows with ``step <= after_step`` (rewriting both files atomically)."""
        kept = [row for row in self.rows() if row["step"] <= after_step]
        atomic_write_text(self.jsonl, "".join(json.dumps(row) + "\n" for row in kept))
        atomic_write_text(self.csv, _csv_text(kept, header=True) if kept else "")  # the first row brings the header

    def write(self, row: dict[str, Any]) -> None:
        """``log.write({"step": 1, "loss": ..., ...})``: append one row (all of ``COLUMNS``) to both files."""
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"metrics row lacks {missing}")
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        header = not self.csv.is_file() or self.csv.stat().st_size == 0
        columns = _columns(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({c: row[c] for c in columns}) + "\n")
        with open(self.csv, "a", newline="") as f:
            f.write(_csv_text([row], header=header))


def _columns(row: dict[str, Any]) -> tuple[str, ...]:
    return COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if c in row)


def _csv_text(rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows[0]) if rows else COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
