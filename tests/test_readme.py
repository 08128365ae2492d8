"""The README's quick start runs as written and prints what it promises."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_quick_start_runs_and_prints_an_action_the_heads_and_an_ablation():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quick_start(), str(README), "exec"), {})
    printed = out.getvalue()
    assert re.search(r"^action: \[.*\]$", printed, re.M)
    assert re.search(r"^layer 3 heads: \(1, \d+, 8, 16\)$", printed, re.M)
    change = float(re.search(r"ablating llm.L3H5: (\S+)", printed).group(1))
    assert change > 0  # the head matters to the action, so zeroing it is seen
