"""Re-execute a notebook and save it with its outputs (what ``notebooks/explore_heads.ipynb`` is committed with).

The committed notebook carries its outputs so that GitHub, nbviewer and ``jupyter nbconvert`` show them without
running anything; its figures carry a static PNG next to the interactive plotly figure where kaleido (and a
Chrome or Chromium, found on ``PATH`` or through ``BROWSER_PATH``) is installed. Run it after changing the
notebook or anything it shows::

    python scripts/refresh_notebook.py                        # full settings, the default policy, saved in place
    python scripts/refresh_notebook.py --fast --out /tmp/nb.ipynb
    python scripts/refresh_notebook.py --policy candidates/openvla-tiny-franka-v3b --out /tmp/v3b.ipynb

The kernel inherits this process's environment (and niceness): ``ROBOSTEER_NOTEBOOK_FAST`` and
``ROBOSTEER_POLICY`` are set from the flags (``ROBOSTEER_NOTEBOOK_PNG=0`` in the environment skips the PNGs).
The slowest cells' times are printed, not saved, and each cell's print chunks are joined, so an unchanged
notebook re-executes to a small diff. A cell that raises stops the run and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from unittest.mock import patch

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore_heads.ipynb"


def execute(notebook: Path, fast: bool = False, policy: str = "default", timeout: int = 1800):
    """``execute(path, fast=True)`` -> the executed ``nbformat`` notebook (raises on the first failing cell)."""
    import nbclient
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    env = {"ROBOSTEER_NOTEBOOK_FAST": "1" if fast else "0", "ROBOSTEER_POLICY": policy,
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "egl")}
    with patch.dict(os.environ, env):  # the kernel is started with this process's environment
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return nb


def pop_timings(nb) -> list[tuple[float, int, str]]:
    """Remove nbclient's per-cell timestamps from ``nb``; -> ``(seconds, cell index, first line)``, slowest first."""
    timings = []
    for i, cell in enumerate(nb.cells):
        stamps = cell.get("metadata", {}).pop("execution", None)
        if stamps and "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            start, end = (datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            timings.append(((end - start).total_seconds(), i, cell.source.splitlines()[0] if cell.source else ""))
    return sorted(timings, reverse=True)


def coalesce_streams(nb) -> None:
    """Join each cell's consecutive stdout (stderr) chunks into one output: how a run's prints are split depends on
    when the kernel flushed, which would change the saved file from run to run."""
    for cell in nb.cells:
        merged = []
        for output in cell.get("outputs", []):
            last = merged[-1] if merged else None
            if (output.output_type == "stream" and last is not None and last.output_type == "stream"
                    and last.name == output.name):
                last.text += output.text
            else:
                merged.append(output)
        if "outputs" in cell:
            cell.outputs = merged


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notebook", type=Path, default=NOTEBOOK, help="the notebook to run (default: %(default)s)")
    p.add_argument("--out", type=Path, help="where to save it (default: over the notebook itself)")
    p.add_argument("--fast", action="store_true", help="the quick settings (ROBOSTEER_NOTEBOOK_FAST=1)")
    p.add_argument("--policy", default="default", help="ROBOSTEER_POLICY: 'default' or a policy folder")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take")
    args = p.parse_args()

    import nbformat

    from robosteer.files import atomic_write_text

    started = time.perf_counter()
    nb = execute(args.notebook, fast=args.fast, policy=args.policy, timeout=args.timeout)
    coalesce_streams(nb)
    for seconds, index, line in pop_timings(nb)[:5]:
        print(f"{seconds:7.1f} s  cell {index}: {line[:70]}", file=sys.stderr)
    out = args.out or args.notebook
    atomic_write_text(out, nbformat.writes(nb) + "\n")
    print(f"{out}: executed in {time.perf_counter() - started:.0f} s, {out.stat().st_size / 1e6:.2f} MB",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
