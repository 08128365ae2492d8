"""Does a selector's score predict what finetuning its heads buys? The rank-band controls of the study.

For a few tasks and seeds, each selector's ranking is cut into three bands of ``top_k`` heads: the top (the
selector's own selection: the study's ``heads-<selector>`` cell), the k around the median
(``heads-<selector>-middle``) and the last k (``heads-<selector>-bottom``), each finetuned on the same
demonstrations and schedule and scored on the same episodes. A score that predicts benefit orders the bands' success
as it orders their scores. The bands run as a study of their own, sharing the matrix's work folder::

    robosteer study --out runs/bands --work-dir runs/study/work --tasks lift/novel_form,place/lighting \\
        --seeds 0 --retention-tasks "" --methods heads-knn-middle,heads-knn-bottom,... --lrs ...
    robosteer study-report runs/study --bands runs/bands
"""

from __future__ import annotations

from robosteer.app.study import BANDS
from robosteer.intervals import newcombe_interval

SELECTORS = ("knn", "activation", "attribution")


def band_method(selector: str, band: str) -> str:
    """The study method of a selector's band: ``heads-knn`` for the top band, ``heads-knn-middle`` etc."""
    return f"heads-{selector}" if band == "top" else f"heads-{selector}-{band}"


def band_cells(report, selector: str) -> dict[tuple[str, int], dict[str, dict]]:
    """{(task, seed): {band: cell}} for the pairs where all three of ``selector``'s bands finished."""
    by_pair: dict[tuple[str, int], dict[str, dict]] = {}
    for band in BANDS:
        method = band_method(selector, band)
        for cell in report.cells + report.band_cells:
            if cell["method"] == method:
                by_pair.setdefault((cell["task"], cell["seed"]), {})[band] = cell
    return {pair: bands for pair, bands in sorted(by_pair.items()) if len(bands) == len(BANDS)
            and pair in {(c["task"], c["seed"]) for c in report.band_cells}}


def _score(cell: dict) -> str:
    score = cell.get("heads_score")
    return "—" if score is None else f"{score:.3g}"


def selector_summary(report, selector: str) -> dict | None:
    """Pooled success of each band over the complete pairs, the top-minus-bottom difference (Newcombe 95%), and
    on how many pairs success falls from band to band (top >= middle >= bottom)."""
    pairs = band_cells(report, selector)
    if not pairs:
        return None
    pooled = {b: (sum(bands[b]["target"]["successes"] for bands in pairs.values()),
                  sum(bands[b]["target"]["episodes"] for bands in pairs.values())) for b in BANDS}
    (kt, nt), (kb, nb) = pooled["top"], pooled["bottom"]
    ordered = sum(bands["top"]["target"]["success"] >= bands["middle"]["target"]["success"]
                  >= bands["bottom"]["target"]["success"] for bands in pairs.values())
    return {"pairs": len(pairs), "pooled": pooled, "difference": kt / nt - kb / nb,
            "interval": newcombe_interval(kt, nt, kb, nb), "ordered": ordered}


def bands_markdown(report) -> list[str]:
    """The rank-band section of the study report: per pair, each band's mean score and success, then per selector
    the summary and which selector's score predicts benefit best."""
    lines = ["", "### Does a selector's score predict finetuning benefit? (rank bands)", "",
             "Each selector's ranking of the 48 LLM heads cut into three bands of the same size: its top (its own "
             "selection, the matrix cell), the heads around the median, and the last. Same demonstrations, schedule "
             "and evaluation episodes. Score: the band's mean under the selector's column, higher = more important "
             "(kNN: 1 - cross-validated MSE / mean-action MSE; patching: the effect on the probe's metric).", "",
             "| task | seed | selector | top: score, success | middle | bottom |", "|---|---|---|---|---|---|"]
    summaries = {}
    for selector in SELECTORS:
        for (task, seed), bands in band_cells(report, selector).items():
            lines.append(f"| {task} | {seed} | {selector} | " + " | ".join(
                f"{_score(bands[b])}, {bands[b]['target']['successes']}/{bands[b]['target']['episodes']}"
                for b in BANDS) + " |")
        summary = selector_summary(report, selector)
        if summary:
            summaries[selector] = summary
    if not summaries:
        return lines + ["", "No task and seed has all three bands of a selector finished yet."]
    lines += ["", "| selector | pairs | top | middle | bottom | top - bottom (95%) | pairs ordered top >= middle >= "
              "bottom |", "|---|---|---|---|---|---|---|"]
    for selector, s in summaries.items():
        low, high = s["interval"]
        lines.append(f"| {selector} | {s['pairs']} | " + " | ".join(
            f"{k / n:.2f} ({k}/{n})" for k, n in (s["pooled"][b] for b in BANDS))
            + f" | {s['difference']:+.2f} [{low:+.2f}, {high:+.2f}] | {s['ordered']}/{s['pairs']} |")
    best = max(summaries, key=lambda sel: summaries[sel]["difference"])
    low, high = summaries[best]["interval"]
    verdict = ("its interval clears 0." if low > 0 else
               "its interval lies below 0: even the best selector's top band did worse than its bottom band, so on "
               "these pairs the scores rank heads against their finetuning benefit." if high < 0 else
               "its interval includes 0, so no selector is shown to predict benefit on these pairs.")
    lines += ["", f"Largest top-minus-bottom difference: {best} ({summaries[best]['difference']:+.2f}); " + verdict]
    return lines
