"""Where do the trained heads sit, and does their depth go with what finetuning them buys?

Each head cell of the study (a selector's heads, random heads, the rank bands) records the heads it trained
(``llm.L<layer>H<head>``). This section of the report counts them per LLM layer for each method, and relates each
cell's mean layer to its gain over zero-shot on the same task: a rank correlation pooled over cells (interval: a
bootstrap that resamples tasks, since cells of one task share its scenes and its zero-shot), and the same
correlation within each task, where the task's difficulty is held fixed. It is an association across selectors,
seeds and draws, not a test that moves heads between layers.
"""

from __future__ import annotations

import re

_HEAD = re.compile(r"L(\d+)H(\d+)$")


def head_layer(name: str) -> int:
    """The LLM layer of a head name such as ``llm.L3H5``."""
    match = _HEAD.search(name)
    if match is None:
        raise ValueError(f"head name {name!r} is not of the form llm.L<layer>H<head>")
    return int(match.group(1))


def _zero_shot(report) -> dict[str, float]:
    return {c["task"]: float(c["target"]["success"]) for c in report.cells if c["method"] == "zero-shot"}


def head_cells(report) -> list[dict]:
    """Every cell (matrix and bands) that trained named heads on a task with a zero-shot cell, with its mean layer
    and its gain over zero-shot: ``{"task", "method", "seed", "layers", "mean_layer", "gain"}``."""
    base = _zero_shot(report)
    rows = []
    for cell in report.cells + report.band_cells:
        if not cell.get("heads") or cell["task"] not in base:
            continue
        layers = [head_layer(h) for h in cell["heads"]]
        rows.append({"task": cell["task"], "method": cell["method"], "seed": cell["seed"], "layers": layers,
                     "mean_layer": sum(layers) / len(layers),
                     # rounded so that equal gains tie exactly in the ranks (0.6 - 0.2 != 0.9 - 0.5 in floats)
                     "gain": round(float(cell["target"]["success"]) - base[cell["task"]], 9)})
    return rows


def _correlation(rows: list[dict]) -> float | None:
    x, y = [r["mean_layer"] for r in rows], [r["gain"] for r in rows]
    if len(rows) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from robosteer.circuits.scores import spearman  # numpy: not on the command line's import path

    return spearman(x, y)


def layer_association(report, resamples: int = 2000, seed: int = 0) -> dict | None:
    """Spearman(mean layer, gain over zero-shot) over all head cells, its 95% interval from resampling tasks with
    replacement (None with fewer than 3 tasks), and per task the within-task correlation and its cell count."""
    import numpy as np

    rows = head_cells(report)
    pooled = _correlation(rows)
    if pooled is None:
        return None
    tasks = sorted({r["task"] for r in rows})
    by_task = {t: [r for r in rows if r["task"] == t] for t in tasks}
    within = {t: (rho, len(by_task[t])) for t in tasks if (rho := _correlation(by_task[t])) is not None}
    interval = None
    if len(tasks) >= 3:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(resamples):
            sample = [r for i in rng.integers(0, len(tasks), size=len(tasks)) for r in by_task[tasks[i]]]
            rho = _correlation(sample)
            if rho is not None:
                draws.append(rho)
        interval = (float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975)))
    return {"cells": len(rows), "tasks": len(tasks), "spearman": pooled, "interval": interval, "within": within}


def layers_markdown(report) -> list[str]:
    """The report's section: heads per layer and mean gain for each head method, then the association."""
    rows = head_cells(report)
    if not rows:
        return []
    layers = sorted({layer for r in rows for layer in r["layers"]})
    present = {r["method"] for r in rows}  # the matrix's order, then the band arms
    methods = [m for m in report.methods if m in present] + sorted(present - set(report.methods))
    lines = ["", "### Where the trained heads sit (LLM layer), and the gain over zero-shot", "",
             "Heads trained per layer, summed over a method's cells (matrix and rank bands); gain = the cell's "
             "target success minus zero-shot's on the same task.", "",
             "| method | cells | " + " | ".join(f"L{layer}" for layer in layers) + " | mean layer | mean gain |",
             "|---" * (len(layers) + 4) + "|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        counts = [sum(r["layers"].count(layer) for r in mine) for layer in layers]
        mean_layer = sum(r["mean_layer"] for r in mine) / len(mine)
        gain = sum(r["gain"] for r in mine) / len(mine)
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(map(str, counts))
                     + f" | {mean_layer:.2f} | {gain:+.3f} |")
    assoc = layer_association(report)
    if assoc is None:
        return lines + ["", "Too few head cells (or no spread in layer or gain) for a rank correlation."]
    interval = assoc["interval"]
    spread = (f" [{interval[0]:+.2f}, {interval[1]:+.2f}] (95%, resampling the {assoc['tasks']} tasks)"
              if interval else f" (no interval: {assoc['tasks']} task(s))")
    within = assoc["within"]
    negative = sum(rho < 0 for rho, _ in within.values())
    lines += ["", f"Spearman(mean layer of the trained heads, gain over zero-shot) over {assoc['cells']} head cells: "
              f"{assoc['spearman']:+.2f}{spread}."]
    if within:
        mean = sum(rho for rho, _ in within.values()) / len(within)
        lines.append(f"Within each task (difficulty held fixed): mean {mean:+.2f} over {len(within)} tasks, negative "
                     f"on {negative}: " + ", ".join(f"{t} {rho:+.2f} ({n} cells)" for t, (rho, n) in within.items())
                     + ".")
    lines.append("An association across selectors, seeds and random draws, not a controlled test of depth.")
    return lines
