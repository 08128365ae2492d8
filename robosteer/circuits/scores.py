"""One object for per-head scores: ``HeadScores``.

Every head scorer (kNN regression, SAV, the random control, activation patching and
its mean-ablation mode, attribution patching) returns a ``HeadScores``: a table over
(tower, layer, head) with one or more named float64 score columns. Column names are
``method`` or ``method:probe`` (``"knn"``, ``"knn:visual"``, ``"attribution:linguistic"``);
diagnostic companions use a slash (``"knn/mse"``, ``"knn/k"``). Each column says
whether higher is better, so ranking, ``top(k)``, head masks and plots never need to
know which method made it.

Files: ``save("run.csv")`` writes ``run.csv`` (one row per head, floats written at
full repr precision) and ``run.json`` (column order, directions, layout, method,
probe, model fingerprint, data description). ``HeadScores.load`` reads both back
bit-exact. No pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from robosteer.files import atomic_write_text, read_json, write_json_atomic
from robosteer.sites import Head, HeadLayout

FORMAT = "robosteer.head_scores"
FORMAT_VERSION = 1
_INDEX_COLUMNS = ("head", "tower", "layer", "head_index")
_COMBINE_METHODS = ("zscore", "rank")


def _rank_desc(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (1 = largest); ties share the lowest rank; NaN ranks last."""
    n = len(values)
    filled = np.where(np.isnan(values), -np.inf, values)
    order = np.lexsort((np.arange(n), -filled))  # by value descending, then head order
    ranks = np.empty(n, dtype=np.int64)
    sorted_vals = filled[order]
    current = 1
    for pos, idx in enumerate(order):
        if pos > 0 and sorted_vals[pos] != sorted_vals[pos - 1]:
            current = pos + 1
        ranks[idx] = current
    ranks[np.isnan(values)] = n  # unscored heads share the last place
    return ranks


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n (1 = smallest) with ties sharing their average rank, as Spearman needs."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_vals[stop + 1] == sorted_vals[start]:
            stop += 1
        ranks[order[start : stop + 1]] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties share their average rank)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"spearman needs two 1-D sequences of the same length >= 2, got {x.shape} and {y.shape}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        raise ValueError("spearman is undefined: one of the columns is constant")
    return float(rx @ ry) / denom


@dataclass(frozen=True, eq=False)
class HeadScores:
    """Scores over heads: ``HeadScores(heads, {"knn": values}, {"knn": True}, layout=layout)``.

    ``scores.top(20)`` gives the 20 most important heads, ``scores.to_frame()`` a pandas
    table, ``scores.grid("llm")`` a (layers, heads) array, ``scores.plot()`` a head-map.
    """

    heads: tuple[Head, ...]  # the rows, in order; canonical names via str(head)
    columns: Mapping[str, np.ndarray]  # column name -> (n_heads,) float64, read-only
    higher_is_better: Mapping[str, bool]  # column name -> direction of importance
    layout: HeadLayout | None = None  # the model's towers; every head must exist in it
    method: str = ""  # what made the scores: "knn", "sav", "random", "merged", ...
    probe: str | None = None  # which probe/data split, e.g. "visual"
    fingerprint: str | None = None  # the model's ``vla.fingerprint()``, if known
    data: str = ""  # free-text description of the data the scores came from
    # extra JSON-able settings; "task" and "policy" (names), when a caller records them, head the head-map's
    # subtitle (``viz.head_map``) with ``fingerprint`` and ``data``
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        heads = tuple(Head.parse(h) for h in self.heads)
        if len(set(heads)) != len(heads):
            seen: set[Head] = set()
            dups = sorted({str(h) for h in heads if h in seen or seen.add(h)})
            raise ValueError(f"HeadScores heads must be unique; repeated: {dups[:5]}")
        if not self.columns:
            raise ValueError("HeadScores needs at least one score column")
        columns: dict[str, np.ndarray] = {}
        for name, values in self.columns.items():
            if not isinstance(name, str) or not name or name in _INDEX_COLUMNS:
                raise ValueError(f"bad score column name {name!r} (empty, or one of {_INDEX_COLUMNS})")
            array = np.array(values, dtype=np.float64, copy=True).reshape(-1)
            if array.shape != (len(heads),):
                raise ValueError(f"column {name!r} has {np.shape(values)} values for {len(heads)} heads")
            array.setflags(write=False)
            columns[name] = array
        directions = dict(self.higher_is_better)
        if set(directions) != set(columns):
            raise ValueError(
                f"higher_is_better must name exactly the columns {list(columns)}, got {list(directions)}"
            )
        if self.layout is not None:
            for head in heads:
                self.layout.validate(head)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "columns", MappingProxyType(columns))
        object.__setattr__(self, "higher_is_better", MappingProxyType({k: bool(directions[k]) for k in columns}))
        # Through JSON once, so that what is in memory equals what a save/load gives back.
        object.__setattr__(self, "meta", MappingProxyType(json.loads(json.dumps(dict(self.meta)))))

    # ----------------------------------------------------------------- access
    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    @property
    def default_column(self) -> str:
        """The first column: what ``top``, ``rank`` and ``plot`` use unless told otherwise."""
        return next(iter(self.columns))

    def _column(self, column: str | None) -> str:
        name = self.default_column if column is None else column
        if name not in self.columns:
            raise KeyError(f"no score column {name!r}; columns are {self.column_names}")
        return name

    def values(self, column: str | None = None) -> np.ndarray:
        """``scores.values("knn")`` -> (n_heads,) float64, aligned with ``scores.heads``."""
        return self.columns[self._column(column)]

    def importance(self, column: str | None = None) -> np.ndarray:
        """The column oriented so that higher always means more important (negated if lower is better)."""
        name = self._column(column)
        values = self.columns[name]
        return values if self.higher_is_better[name] else -values

    def __len__(self) -> int:
        return len(self.heads)

    def __getitem__(self, head: Head | str) -> dict[str, float]:
        """``scores["llm.L3H1"]`` -> ``{"knn": 0.41, "knn/mse": 0.02, ...}``."""
        index = self.heads.index(Head.parse(head))
        return {name: float(values[index]) for name, values in self.columns.items()}

    # ----------------------------------------------------------------- ranking
    def rank(self, column: str | None = None) -> np.ndarray:
        """``scores.rank("knn")`` -> (n_heads,) int ranks aligned with ``heads``; 1 = most important.

        Ties share the lowest rank; unscored (NaN) heads all rank ``len(scores)``.
        """
        return _rank_desc(self.importance(column))

    def top(self, k: int | None = None, column: str | None = None) -> list[Head]:
        """``scores.top(20)`` -> the 20 most important heads, best first (ties in head order).

        ``k=None`` returns every scored head in order; NaN scores are never returned.
        """
        importance = self.importance(column)
        scored = np.flatnonzero(~np.isnan(importance))
        order = scored[np.lexsort((scored, -importance[scored]))]
        if k is not None:
            if k < 0:
                raise ValueError(f"k must be >= 0, got {k}")
            order = order[:k]
        return [self.heads[i] for i in order]

    def spearman(
        self, other_or_column_a: "HeadScores | str", column_b: str | None = None, *, other_column: str | None = None
    ) -> float:
        """Rank correlation of two importance orderings.

        ``scores.spearman("knn", "sav")`` compares two columns of this object;
        ``scores.spearman(other, "knn", other_column="attribution")`` compares this
        object's column (default column if omitted) with another object's column
        over the heads both score. Columns are oriented by ``higher_is_better`` first,
        so +1 means the two methods agree on which heads matter. NaNs are dropped.
        """
        if isinstance(other_or_column_a, HeadScores):
            other = other_or_column_a
            a = self.importance(column_b)
            index = {h: i for i, h in enumerate(other.heads)}
            common = [(i, index[h]) for i, h in enumerate(self.heads) if h in index]
            if not common:
                raise ValueError("the two HeadScores share no heads")
            mine, theirs = (np.array(ix) for ix in zip(*common))
            x, y = a[mine], other.importance(other_column)[theirs]
        else:
            if column_b is None:
                raise ValueError("spearman(column_a, column_b) needs two column names")
            x, y = self.importance(other_or_column_a), self.importance(column_b)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if len(x) < 2:
            raise ValueError(f"spearman needs at least 2 heads scored by both, got {len(x)}")
        return spearman(x, y)

    # ----------------------------------------------------------------- derived objects
    def with_columns(self, columns: Mapping[str, Any], higher_is_better: Mapping[str, bool]) -> "HeadScores":
        """A copy with extra (or replaced) columns, same heads and metadata."""
        merged = {**self.columns, **columns}
        directions = {**self.higher_is_better, **higher_is_better}
        return HeadScores(self.heads, merged, directions, self.layout, self.method, self.probe,
                          self.fingerprint, self.data, self.meta)

    def combine(self, columns: Sequence[str] | None = None, how: str = "zscore", name: str | None = None) -> "HeadScores":
        """``scores.combine(["knn:visual", "knn:linguistic"])`` -> a copy with one combined column added.

        ``how="zscore"``: each column is oriented (higher = more important), standardised
        to mean 0 / std 1 over the heads it scores, and the z-scores are averaged
        (higher is better). ``how="rank"``: the mean of the per-column ranks
        (1 = best; lower is better). A head's combined value ignores columns where it
        is NaN. The new column is named ``name`` (default ``"combined:<how>"``).
        """
        if how not in _COMBINE_METHODS:
            raise ValueError(f"combine how={how!r}; choose one of {_COMBINE_METHODS}")
        names = [self._column(c) for c in (columns if columns is not None else self.column_names)]
        if not names:
            raise ValueError("combine needs at least one column")
        parts = []
        for column in names:
            if how == "rank":
                ranks = self.rank(column).astype(np.float64)
                ranks[np.isnan(self.columns[column])] = np.nan
                parts.append(ranks)
            else:
                values = self.importance(column)
                std = np.nanstd(values)
                if not std > 0:
                    raise ValueError(f"cannot z-score column {column!r}: it is constant")
                parts.append((values - np.nanmean(values)) / std)
        stacked = np.vstack(parts)  # (n_columns, n_heads)
        counts = (~np.isnan(stacked)).sum(axis=0)
        combined = np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)
        new_name = name or f"combined:{how}"
        return self.with_columns({new_name: combined}, {new_name: how == "zscore"})

    @classmethod
    def merge(cls, *parts: "HeadScores") -> "HeadScores":
        """``HeadScores.merge(knn_visual, knn_linguistic)``: one object holding the columns of all.

        Heads are the union (first object's order first); a head a part does not score is
        NaN in that part's columns. Column names must not collide. Layouts and model
        fingerprints must agree where given.
        """
        if not parts:
            raise ValueError("merge needs at least one HeadScores")
        layouts = {p.layout for p in parts if p.layout is not None}
        prints = {p.fingerprint for p in parts if p.fingerprint is not None}
        if len(layouts) > 1:
            raise ValueError(f"cannot merge scores over different layouts: {[l.to_dict() for l in layouts]}")
        if len(prints) > 1:
            raise ValueError(f"cannot merge scores of different models: fingerprints {sorted(prints)}")
        heads: list[Head] = []
        seen: set[Head] = set()
        for part in parts:
            for h in part.heads:
                if h not in seen:
                    seen.add(h)
                    heads.append(h)
        position = {h: i for i, h in enumerate(heads)}
        columns: dict[str, np.ndarray] = {}
        directions: dict[str, bool] = {}
        for part in parts:
            rows = np.array([position[h] for h in part.heads], dtype=np.int64)
            for name, values in part.columns.items():
                if name in columns:
                    raise ValueError(f"column {name!r} appears in more than one of the merged scores")
                full = np.full(len(heads), np.nan)
                full[rows] = values
                columns[name] = full
                directions[name] = part.higher_is_better[name]
        sources = [{"method": p.method, "probe": p.probe, "data": p.data, "columns": p.column_names,
                    "meta": dict(p.meta)} for p in parts]
        methods = list(dict.fromkeys(p.method for p in parts))
        return cls(tuple(heads), columns, directions, layout=next(iter(layouts), None),
                   method=methods[0] if len(methods) == 1 else "merged", probe=None,
                   fingerprint=next(iter(prints), None), data="; ".join(p.data for p in parts if p.data),
                   meta={"sources": sources})

    # ----------------------------------------------------------------- views
    def to_frame(self):
        """``scores.to_frame()`` -> pandas DataFrame: head, tower, layer, head_index, then one column per score."""
        import pandas as pd

        frame = pd.DataFrame({
            "head": [str(h) for h in self.heads],
            "tower": [h.tower for h in self.heads],
            "layer": np.array([h.layer for h in self.heads], dtype=np.int64),
            "head_index": np.array([h.head for h in self.heads], dtype=np.int64),
        })
        for name, values in self.columns.items():
            frame[name] = np.array(values)
        return frame

    def grid(self, tower: str | None = None, column: str | None = None) -> np.ndarray:
        """``scores.grid("llm", "knn")`` -> (layers, heads) float64; NaN where a head is not scored.

        The grid shape comes from ``layout`` (or, without one, from the largest scored
        layer and head of that tower). ``tower`` may be omitted when there is one tower.
        """
        towers = self.towers
        if tower is None:
            if len(towers) != 1:
                raise ValueError(f"grid(tower=...) needed: these scores cover towers {towers}")
            tower = towers[0]
        if self.layout is not None:
            n_layers, n_heads = self.layout.shape(tower)
        else:
            in_tower = [h for h in self.heads if h.tower == tower]
            if not in_tower:
                raise KeyError(f"no scores for tower {tower!r}; towers are {towers}")
            n_layers = max(h.layer for h in in_tower) + 1
            n_heads = max(h.head for h in in_tower) + 1
        out = np.full((n_layers, n_heads), np.nan)
        values = self.values(column)
        for i, h in enumerate(self.heads):
            if h.tower == tower:
                out[h.layer, h.head] = values[i]
        return out

    @property
    def towers(self) -> list[str]:
        """Towers present, in layout order if known, else in order of appearance."""
        present = list(dict.fromkeys(h.tower for h in self.heads))
        if self.layout is None:
            return present
        return [t for t in self.layout.names if t in present]

    def plot(self, column: str | None = None, **kwargs):
        """``scores.plot("knn", mask=mask)`` -> plotly head-map; see ``robosteer.viz.head_map``."""
        from robosteer.viz import head_map

        return head_map(self, column=column, **kwargs)

    def __repr__(self) -> str:
        return (f"HeadScores(method={self.method!r}, probe={self.probe!r}, heads={len(self.heads)}, "
                f"columns={self.column_names})")

    def __eq__(self, other: object) -> bool:
        """Equal heads, metadata and bit-identical columns (NaN payloads included)."""
        if not isinstance(other, HeadScores):
            return NotImplemented
        return (self.heads == other.heads and self.column_names == other.column_names
                and dict(self.higher_is_better) == dict(other.higher_is_better)
                and all(np.array_equal(self.columns[c].view(np.uint64), other.columns[c].view(np.uint64))
                        for c in self.columns)
                and (self.layout, self.method, self.probe, self.fingerprint, self.data)
                == (other.layout, other.method, other.probe, other.fingerprint, other.data)
                and dict(self.meta) == dict(other.meta))

    __hash__ = None  # type: ignore[assignment]

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """``scores.save("knn.csv")`` writes ``knn.csv`` and the sidecar ``knn.json``; returns the CSV path."""
        path = Path(path)
        if path.suffix != ".csv":
            raise ValueError(f"HeadScores are saved as .csv (+ .json sidecar), got {path}")
        buffer = io.StringIO()
        # float_format=None writes repr(float): the shortest string that reads back bit-exact.
        self.to_frame().to_csv(buffer, index=False, lineterminator="\n")
        text = buffer.getvalue()
        sidecar = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "csv": path.name,
            "csv_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "columns": self.column_names,
            "higher_is_better": dict(self.higher_is_better),
            "layout": None if self.layout is None else self.layout.to_dict(),
            "method": self.method,
            "probe": self.probe,
            "fingerprint": self.fingerprint,
            "data": self.data,
            "meta": dict(self.meta),
        }
        atomic_write_text(path, text)
        write_json_atomic(path.with_suffix(".json"), sidecar)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "HeadScores":
        """``HeadScores.load("knn.csv")`` reads the CSV and its ``.json`` sidecar back, bit-exact."""
        import pandas as pd

        path = Path(path)
        sidecar_path = path.with_suffix(".json")
        if not sidecar_path.exists():
            raise FileNotFoundError(f"{path} has no sidecar {sidecar_path.name}; HeadScores.save writes both")
        sidecar = read_json(sidecar_path, "head scores sidecar")
        if sidecar.get("format") != FORMAT or sidecar.get("version") != FORMAT_VERSION:
            raise ValueError(f"{sidecar_path} is not a {FORMAT} v{FORMAT_VERSION} file "
                             f"(format={sidecar.get('format')!r}, version={sidecar.get('version')!r})")
        text = path.read_text()
        if hashlib.sha256(text.encode()).hexdigest() != sidecar["csv_sha256"]:
            raise ValueError(f"{path} does not match its sidecar {sidecar_path.name} (checksum differs)")
        names = list(sidecar["columns"])
        frame = pd.read_csv(io.StringIO(text), float_precision="round_trip",
                            dtype={name: np.float64 for name in names}, keep_default_na=False,
                            na_values={name: [""] for name in names})
        if list(frame.columns) != [*_INDEX_COLUMNS, *names]:
            raise ValueError(f"{path} columns {list(frame.columns)} differ from the sidecar's {names}")
        heads = tuple(Head.parse(text) for text in frame["head"])
        for h, tower, layer, index in zip(heads, frame["tower"], frame["layer"], frame["head_index"]):
            if (h.tower, h.layer, h.head) != (tower, int(layer), int(index)):
                raise ValueError(f"{path}: row {h} disagrees with its tower/layer/head_index {tower}/{layer}/{index}")
        layout = None if sidecar["layout"] is None else HeadLayout(sidecar["layout"])
        return cls(heads, {n: frame[n].to_numpy(dtype=np.float64) for n in names}, sidecar["higher_is_better"],
                   layout=layout, method=sidecar["method"], probe=sidecar["probe"],
                   fingerprint=sidecar["fingerprint"], data=sidecar["data"], meta=sidecar["meta"])
