"""Loader of a local LeRobot-format dataset folder, through the same interface as DemoDataset.

Supports the LeRobot v2.x layout (``meta/info.json``, ``meta/tasks.jsonl``,
``data/chunk-XXX/episode_XXXXXX.parquet``) and v3.0 (``meta/tasks.parquet``,
``data/chunk-XXX/file-XXX.parquet``). Images stored in the Parquet files (features of
dtype ``image``: PNG/JPEG bytes) are decoded with Pillow. Features of dtype ``video``
are decoded with imageio when a video backend (PyAV) is installed; otherwise opening
the dataset raises an error saying so. Nothing is downloaded::

    ds = LeRobotDataset("~/data/my_lerobot_set")
    ds[0].image, ds[0].instruction, ds[0].action

Several camera views: by default one image feature is read (``image_key``, or the first image
or video feature of ``meta/info.json``), as before. ``image_keys=("observation.images.image",
"observation.images.wrist_image")`` reads those features as the views of each frame, in that
order, and ``image_keys="all"`` every image or video feature in ``info.json`` order. The first
is ``Frame.image``; ``Frame.views`` and ``ds.cameras`` name each view by its key without the
``observation.images.`` prefix (``"image"``, ``"wrist_image"``)::

    ds = LeRobotDataset("~/data/libero", image_keys="all")
    ds.cameras, ds[0].images           # ("image", "wrist_image"), (main, wrist)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..files import FileFormatError, read_json
from .frames import FrameDataset
from .keyframes import keyframe_flags
from .statistics import dataset_statistics

IMAGES_PREFIX = "observation.images."  # LeRobot's namespace of camera features


def camera_name(key: str) -> str:
    """``camera_name("observation.images.wrist")`` -> ``"wrist"``: a view's name from its feature key."""
    return key[len(IMAGES_PREFIX):] if key.startswith(IMAGES_PREFIX) and len(key) > len(IMAGES_PREFIX) else key


def _read_tasks(meta: Path) -> dict[int, str]:
    jsonl, parquet = meta / "tasks.jsonl", meta / "tasks.parquet"
    if jsonl.is_file():
        tasks = {}
        for n, line in enumerate(jsonl.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    tasks[_task_index(row["task_index"])] = str(row["task"])
                except (json.JSONDecodeError, KeyError, ValueError, TypeError) as err:
                    raise FileFormatError(jsonl, "task_index/task", f"line {n}: expected an object "
                                          f'{{"task_index": int, "task": str}} ({type(err).__name__}: {err})') from None
        return tasks
    if parquet.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(parquet).to_pandas()
        if "task" not in table.columns:  # v3 keeps the task string as the index
            table = table.reset_index().rename(columns={table.index.name or "index": "task"})
        return {int(i): str(t) for i, t in zip(table["task_index"], table["task"])}
    return {}


def _task_index(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"task_index must be an integer, got {value!r}")
    return int(value)


class LeRobotDataset(FrameDataset):
    """Frames of a local LeRobot dataset folder; see the module docstring."""

    def __init__(self, root, *, image_key: str | None = None, state_key: str = "observation.state", action_key: str = "action",
                 image_keys: "tuple[str, ...] | list[str] | str | None" = None) -> None:
        import pyarrow.parquet as pq

        self.root = Path(root).expanduser()
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{info_path} not found: {self.root} is not a LeRobot dataset folder")
        self.info = read_json(info_path, "LeRobot info")
        if not isinstance(self.info, dict):
            raise FileFormatError(info_path, None, f"expected a JSON object, got {type(self.info).__name__}")
        features = self.info.get("features")
        if not isinstance(features, dict):
            raise FileFormatError(info_path, "features", "missing or not an object")
        for key, feature in features.items():
            if not isinstance(feature, dict):
                raise FileFormatError(info_path, f"features.{key}", f"expected an object with a 'dtype', got {feature!r}")
        visual = [k for k, f in features.items() if f.get("dtype") in ("image", "video")]
        keys = self._view_keys(info_path, visual, image_key, image_keys)
        if keys:
            image_key = keys[0]
        if image_key is None:
            if not visual:
                raise FileFormatError(info_path, "features", "no image or video feature")
            image_key = visual[0]
        if image_key not in features:
            raise FileFormatError(info_path, "features", f"no feature {image_key!r}; image features: {visual}")
        self.image_key, self.image_dtype = image_key, features[image_key].get("dtype")
        self.image_keys = keys or (image_key,)  # the features read, main first
        self.key_dtypes = {k: features[k].get("dtype") for k in self.image_keys}
        self.fps = self.info.get("fps")

        files = sorted((self.root / "data").glob("chunk-*/*.parquet"))
        if not files:
            raise FileNotFoundError(f"no Parquet files under {self.root / 'data'}/chunk-*/")
        columns = {"episode_index", "frame_index", action_key}
        tables = []
        for path in files:
            try:
                table = pq.read_table(path)
            except Exception as err:  # a damaged file
                raise FileFormatError(path, None, f"cannot be read as Parquet ({err})") from None
            missing = sorted(columns - set(table.column_names))
            if missing:
                raise FileFormatError(path, missing[0], "missing column")
            for key in self.image_keys:
                if self.key_dtypes[key] == "image" and key not in table.column_names:
                    raise FileFormatError(path, key, "missing image column")
            tables.append((path, table))

        tasks = _read_tasks(self.root / "meta")
        episode, step, action, proprio, task_ids, self._image_cells = [], [], [], [], [], []
        self._view_cells: dict[str, list] = {k: [] for k in self.image_keys[1:] if self.key_dtypes[k] == "image"}
        for path, table in tables:
            episode.append(table.column("episode_index").to_numpy())
            step.append(table.column("frame_index").to_numpy())
            action.append(self._matrix(table, action_key, path))
            proprio.append(self._matrix(table, state_key, path) if state_key in table.column_names else np.zeros((table.num_rows, 0)))
            ids = table.column("task_index").to_numpy() if "task_index" in table.column_names else np.zeros(table.num_rows, int)
            task_ids.append(ids)
            if self.image_dtype == "image":
                self._image_cells.extend(table.column(image_key).to_pylist())
            for key, cells in self._view_cells.items():
                cells.extend(table.column(key).to_pylist())
        action = np.concatenate(action)
        task_ids = np.concatenate(task_ids)
        instructions = [tasks.get(int(t), "") for t in task_ids]
        episode, step = np.concatenate(episode), np.concatenate(step)

        gripper_mid = float(action[:, -1].min() + action[:, -1].max()) / 2
        flags = {}
        for e in np.unique(episode):
            idx = np.flatnonzero(episode == e)
            idx = idx[np.argsort(step[idx], kind="stable")]
            for name, values in keyframe_flags(action[idx], gripper_threshold=gripper_mid).items():
                flags.setdefault(name, np.zeros(len(action), dtype=bool))[idx] = values
        super().__init__(
            episode=episode,
            step=step,
            action=action,
            proprio=np.concatenate(proprio),
            keyframes=flags,
            instructions=instructions,
            tasks=[str(t) for t in task_ids],
        )
        self._videos: dict[int, np.ndarray] = {}
        self._view_videos: dict[tuple[str, int], np.ndarray] = {}
        self.cameras = tuple(camera_name(k) for k in self.image_keys) if len(self.image_keys) > 1 else ()
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"image_keys {self.image_keys} give repeated camera names {self.cameras}")
        if self.image_dtype == "video":
            self._decode_video(int(self.episode_index[0]))  # fail now, not in the middle of training
        for key in self.image_keys[1:]:
            if self.key_dtypes[key] == "video":
                self._decode_video(int(self.episode_index[0]), key)

    @staticmethod
    def _view_keys(info_path: Path, visual: list[str], image_key: str | None, image_keys) -> tuple[str, ...]:
        """The features ``image_keys`` asks for (``()``: one view, chosen by ``image_key`` as before)."""
        if image_keys is None:
            return ()
        if image_key is not None:
            raise ValueError("give image_key (one view) or image_keys (several), not both")
        keys = tuple(visual) if image_keys == "all" else ((image_keys,) if isinstance(image_keys, str) else tuple(image_keys))
        if not keys:
            raise FileFormatError(info_path, "features", "no image or video feature")
        unknown = [k for k in keys if k not in visual]
        if unknown or len(set(keys)) != len(keys):
            raise ValueError(f"{info_path}: field 'features': image_keys {list(keys)} must be distinct image features; "
                             f"image features: {visual}")
        return keys

    @staticmethod
    def _matrix(table, key: str, path: Path) -> np.ndarray:
        try:
            return np.asarray(table.column(key).to_pylist(), dtype=np.float32).reshape(table.num_rows, -1)
        except (ValueError, TypeError) as err:
            raise FileFormatError(path, key, f"expected a fixed-length number vector per row ({err})") from None

    @property
    def statistics(self) -> dict:
        """OpenVLA-layout statistics computed from this folder's actions and states."""
        return dataset_statistics(self.root.name, self.actions, self.proprio, self.num_episodes)

    def _decode_video(self, episode: int, key: str | None = None) -> np.ndarray:
        cache, name = (self._videos, episode) if key is None else (self._view_videos, (key, episode))
        key = key or self.image_key
        if name in cache:
            return cache[name]
        info_path = self.root / "meta" / "info.json"
        template = self.info.get("video_path")
        if not isinstance(template, str) or "{episode_index" not in template:
            raise FileFormatError(
                info_path, "video_path", f"feature {key!r} is stored as video in a layout this loader cannot read "
                "(only per-episode video files of LeRobot v2.x are supported); convert it to image features"
            )
        chunks_size = self.info.get("chunks_size", 1000)
        if not isinstance(chunks_size, int) or isinstance(chunks_size, bool) or chunks_size < 1:
            raise FileFormatError(info_path, "chunks_size", f"expected a positive integer, got {chunks_size!r}")
        try:
            path = self.root / template.format(episode_chunk=episode // chunks_size, video_key=key, episode_index=episode)
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            raise FileFormatError(info_path, "video_path", f"expected a template with {{episode_chunk}}, {{video_key}} "
                                  f"and {{episode_index}}, got {template!r} ({type(err).__name__}: {err})") from None
        try:
            import imageio.v3 as iio

            frames = np.asarray(iio.imread(path, plugin="pyav"))
        except Exception as err:  # missing backend, missing file or undecodable stream
            raise FileFormatError(
                path, key, f"cannot decode video feature {key!r} ({type(err).__name__}: {err}); "
                "install PyAV (`pip install av`) or store the images in the Parquet files"
            ) from None
        cache[name] = frames[..., :3].astype(np.uint8)
        return cache[name]

    def image(self, i: int) -> np.ndarray:
        if self.image_dtype == "video":
            return self._decode_video(int(self.episode_index[i]))[int(self.step_index[i])]
        return self._decode_cell(i, self._image_cells[i], self.image_key)

    def view(self, i: int, camera: str) -> np.ndarray:
        if camera not in self.cameras:
            raise ValueError(f"no camera {camera!r} in {self.root}; cameras: {list(self.cameras) or [camera_name(self.image_key)]}")
        key = self.image_keys[self.cameras.index(camera)]
        if key == self.image_key:
            return self.image(i)
        if self.key_dtypes[key] == "video":
            return self._decode_video(int(self.episode_index[i]), key)[int(self.step_index[i])]
        return self._decode_cell(i, self._view_cells[key][i], key)

    def _decode_cell(self, i: int, cell, key: str) -> np.ndarray:
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if data is None and isinstance(cell, dict) and isinstance(cell.get("path"), str) and cell["path"]:
            data = (self.root / cell["path"]).read_bytes()
        if data is None:
            raise FileFormatError(self.root, key, f"frame {i}: no image bytes")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, TypeError, OSError) as err:
            raise FileFormatError(self.root, key, f"frame {i}: expected PNG or JPEG image bytes ({err})") from None
