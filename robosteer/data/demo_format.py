"""The on-disk demonstration format (version 1): Parquet + NumPy + JSON, no pickle.

A dataset folder holds::

    meta.json                  format version, image size, camera, tasks, counts, statistics
    dataset_statistics.json    the same statistics alone, in OpenVLA's layout
    steps.parquet              one row per step (see STEP_COLUMNS; optional "state" column)
    episodes.parquet           one row per episode (see EPISODE_COLUMNS)
    images/episode_000000.npy  (T, H, W, 3) uint8 agentview images of one episode
    images_wrist/episode_000000.npy   the same episode's wrist view (only in multi-camera folders)

A multi-camera folder (``DemoWriter(..., cameras=("agentview", "wrist"))``) lists its views in
``meta.json["cameras"]``, main view first; the main view stays in ``images/`` and each other
view ``c`` is in ``images_<c>/`` under the same file name. A single-camera folder has no
``cameras`` key and is written and read exactly as before (same format version).

``DemoWriter`` writes it; ``read_steps``/``read_episodes``/``read_meta``/``load_images``
read it back and name the file and field of anything malformed. docs/sim.md
describes every field.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import FileFormatError, atomic_write_text
from .keyframes import KEYFRAME_NAMES, keyframe_flags
from .schema import ACTION_NAMES, PROPRIO_NAMES, STATE_NAMES
from .statistics import check_statistics, dataset_statistics

FORMAT_NAME = "robosteer-sim-demos"
FORMAT_VERSION = 1
DATASET_NAME = "robosteer_sim"  # key of the statistics, as OpenVLA names datasets
STEP_COLUMNS: tuple[str, ...] = (
    "episode", "step", "task", "family", "variation", "seed", "instruction",
    "action", "proprio", *KEYFRAME_NAMES, "phase", "success",
)  # fmt: skip
STATE_COLUMN = "state"  # optional (N, 6) privileged target/goal positions (expert.STATE_NAMES), for auxiliary targets
EPISODE_COLUMNS: tuple[str, ...] = ("episode", "task", "family", "variation", "seed", "instruction", "success", "length", "image_file")


class DemoFormatError(FileFormatError):
    """A demo file is missing or malformed; the message names the file and the field."""


def image_file(episode: int) -> str:
    return f"images/episode_{episode:06d}.npy"


def view_file(main_file: str, camera: str) -> str:
    """``view_file("images/episode_000003.npy", "wrist")`` -> ``"images_wrist/episode_000003.npy"``."""
    return f"images_{camera}/{Path(main_file).name}"


def meta_cameras(meta: dict) -> tuple[str, ...]:
    """The views of a demo folder in order (main first); empty for a single-camera folder."""
    return tuple(meta.get("cameras") or ())


class DemoWriter:
    """``with DemoWriter(out, image_size=64) as w: w.add(episode)``; files are final on close.

    ``cameras=("agentview", "wrist")`` writes every view of each episode (``episode.views``); with
    one camera (``None``, the default) only ``episode.images`` is written, as before.
    """

    def __init__(self, root, *, image_size: int, camera: str = "agentview", control_freq: int = 10,
                 cameras: tuple[str, ...] | None = None) -> None:
        import pyarrow  # noqa: F401  (fail early, before any episode is simulated)

        self.root = Path(root)
        self.cameras = tuple(cameras or ())
        if len(self.cameras) <= 1:
            self.cameras = ()  # one camera: the single-camera layout
        elif len(set(self.cameras)) != len(self.cameras) or not all(isinstance(c, str) and c for c in self.cameras):
            raise ValueError(f"DemoWriter cameras must be distinct non-empty names, got {cameras!r}")
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        for extra in self.cameras[1:]:
            (self.root / f"images_{extra}").mkdir(parents=True, exist_ok=True)
        self.image_size, self.camera, self.control_freq = image_size, camera, control_freq
        self.steps: list[dict] = []
        self.episodes: list[dict] = []
        self._actions: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        self._with_state: bool | None = None  # every episode has states, or none does

    def __enter__(self) -> "DemoWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()

    def add(self, episode) -> int:
        """Write one recorded episode (a ``robosteer.sim.rollout.Episode`` or any object with its fields);
        returns its index in the dataset."""
        if episode.actions is None or episode.images is None:
            raise ValueError("DemoWriter.add needs an episode recorded with images (run_episode(record=True))")
        views = getattr(episode, "views", None) or {}
        missing = [c for c in self.cameras if c not in views]
        if missing:
            raise ValueError(f"DemoWriter.add: the episode has no {missing} view (views: {list(views)}); record it with "
                             f"SimConfig(cameras={self.cameras!r})")
        index = len(self.episodes)
        name = image_file(index)
        np.save(self.root / name, np.ascontiguousarray(episode.images, dtype=np.uint8), allow_pickle=False)
        for extra in self.cameras[1:]:
            np.save(self.root / view_file(name, extra), np.ascontiguousarray(views[extra], dtype=np.uint8),
                    allow_pickle=False)
        flags = keyframe_flags(episode.actions)
        task = episode.task
        phases = episode.phases or [""] * episode.length
        with_state = episode.states is not None
        if self._with_state is None:
            self._with_state = with_state
        elif self._with_state != with_state:
            raise ValueError("DemoWriter.add: either every episode carries privileged states or none does")
        for t in range(len(episode.actions)):
            self.steps.append(
                {
                    "episode": index, "step": t, "task": str(task), "family": task.family,
                    "variation": task.variation, "seed": episode.seed, "instruction": episode.instruction,
                    "action": episode.actions[t].tolist(), "proprio": episode.proprio[t].tolist(),
                    **{k: bool(v[t]) for k, v in flags.items()}, "phase": phases[t], "success": episode.success,
                    **({STATE_COLUMN: episode.states[t].tolist()} if with_state else {}),
                }
            )  # fmt: skip
        self.episodes.append(
            {
                "episode": index, "task": str(task), "family": task.family, "variation": task.variation,
                "seed": episode.seed, "instruction": episode.instruction, "success": episode.success,
                "length": len(episode.actions), "image_file": name,
            }
        )  # fmt: skip
        self._actions.append(episode.actions)
        self._proprio.append(episode.proprio)
        return index

    def close(self, extra_meta: dict | None = None) -> dict:
        """Write the Parquet tables, statistics and meta.json; returns the meta dict."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.episodes:
            raise ValueError(f"no episodes to write to {self.root}")
        vec = pa.list_(pa.float32(), 7)
        schema = pa.schema(
            [("episode", pa.int32()), ("step", pa.int32()), ("task", pa.string()), ("family", pa.string()),
             ("variation", pa.string()), ("seed", pa.int64()), ("instruction", pa.string()), ("action", vec),
             ("proprio", vec), *[(k, pa.bool_()) for k in KEYFRAME_NAMES], ("phase", pa.string()), ("success", pa.bool_()),
             *([(STATE_COLUMN, pa.list_(pa.float32(), len(STATE_NAMES)))] if self._with_state else [])]
        )  # fmt: skip
        pq.write_table(pa.Table.from_pylist(self.steps, schema=schema), self.root / "steps.parquet")
        pq.write_table(pa.Table.from_pylist(self.episodes), self.root / "episodes.parquet")
        stats = dataset_statistics(DATASET_NAME, np.concatenate(self._actions), np.concatenate(self._proprio), len(self.episodes))
        atomic_write_text(self.root / "dataset_statistics.json", json.dumps(stats, indent=2))
        tasks = sorted({e["task"] for e in self.episodes})
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "image_size": [self.image_size, self.image_size],
            "camera": self.camera,
            **({"cameras": list(self.cameras)} if self.cameras else {}),
            "control_freq": self.control_freq,
            "action_names": list(ACTION_NAMES),
            "action_space": "OSC_POSE delta, normalised to [-1, 1]; gripper -1 open, +1 close",
            "proprio_names": list(PROPRIO_NAMES),
            "keyframe_names": list(KEYFRAME_NAMES),
            **({"state_names": list(STATE_NAMES)} if self._with_state else {}),
            "tasks": tasks,
            "num_episodes": len(self.episodes),
            "num_steps": len(self.steps),
            "dataset_statistics": stats,
            **(extra_meta or {}),
        }
        # written last and atomically: a folder with a meta.json is complete (a killed collection leaves none)
        atomic_write_text(self.root / "meta.json", json.dumps(meta, indent=2))
        return meta


def read_meta(root) -> dict:
    """meta.json of a dataset folder, checked for format and version."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a robosteer demo folder (run `robosteer collect`)")
    try:
        meta = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DemoFormatError(path, "<json>", f"not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DemoFormatError(path, "<json>", f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise DemoFormatError(path, "format", f"expected {FORMAT_NAME!r}, got {meta.get('format')!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DemoFormatError(path, "format_version", f"this reader knows version {FORMAT_VERSION}, got {meta.get('format_version')!r}")
    for key in ("image_size", "dataset_statistics", "num_episodes"):
        if key not in meta:
            raise DemoFormatError(path, key, "missing")
    size = meta["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        raise DemoFormatError(path, "image_size", f"expected [height, width] positive integers, got {size!r}")
    if not (_is_int(meta["num_episodes"]) and meta["num_episodes"] >= 0):
        raise DemoFormatError(path, "num_episodes", f"expected a non-negative integer, got {meta['num_episodes']!r}")
    check_statistics(meta["dataset_statistics"], path)
    cameras = meta.get("cameras")
    if cameras is not None and (not isinstance(cameras, list) or len(cameras) < 2
                                or not all(isinstance(c, str) and c for c in cameras) or len(set(cameras)) != len(cameras)):
        raise DemoFormatError(path, "cameras", f"expected a list of two or more distinct camera names, got {cameras!r}")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_table(path: Path, columns: tuple[str, ...]):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DemoFormatError(path, "<parquet>", f"cannot be read as Parquet ({err})") from None
    for name in columns:
        if name not in table.column_names:
            raise DemoFormatError(path, name, "missing column")
    return table


def _vectors(table, path: Path, name: str, width: int) -> np.ndarray:
    column = table.column(name).combine_chunks()
    try:
        values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        values = values.reshape(len(column), width)
    except (ValueError, TypeError) as err:
        raise DemoFormatError(path, name, f"expected {width} numbers per row ({err})") from None
    if not np.all(np.isfinite(values)):
        raise DemoFormatError(path, name, "contains NaN or infinite values")
    return values


def read_steps(root) -> dict:
    """steps.parquet as NumPy arrays: episode, step, action (N, 7), proprio (N, 7), flags, strings, state (N, 6) if any."""
    path = Path(root) / "steps.parquet"
    table = _read_table(path, STEP_COLUMNS)
    out = {name: table.column(name).to_numpy() for name in ("episode", "step", "seed", *KEYFRAME_NAMES, "success")}
    out["action"] = _vectors(table, path, "action", len(ACTION_NAMES))
    out["proprio"] = _vectors(table, path, "proprio", len(PROPRIO_NAMES))
    for name in ("task", "instruction", "phase"):
        out[name] = table.column(name).to_pylist()
    if STATE_COLUMN in table.column_names:
        out[STATE_COLUMN] = _vectors(table, path, STATE_COLUMN, len(STATE_NAMES))
    return out


def read_episodes(root) -> list[dict]:
    """episodes.parquet as a list of row dicts."""
    return _read_table(Path(root) / "episodes.parquet", EPISODE_COLUMNS).to_pylist()


def load_images(root, episode: dict, image_size, camera: str | None = None) -> np.ndarray:
    """The (T, H, W, 3) uint8 image array of one episode row, memory-mapped; ``camera`` names a
    view other than the main one (``images_<camera>/``) in a multi-camera folder."""
    path = Path(root) / (episode["image_file"] if camera is None else view_file(episode["image_file"], camera))
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        what = "images" if camera is None else f"{camera} images"
        raise FileNotFoundError(f"{path} not found ({what} of episode {episode['episode']})") from None
    except ValueError as err:
        raise DemoFormatError(path, "images", f"not a NumPy array file ({err})") from None
    expected = (episode["length"], *image_size, 3)
    if images.dtype != np.uint8 or images.shape != expected:
        raise DemoFormatError(path, "images", f"expected uint8 {expected}, got {images.dtype} {images.shape}")
    return images
