"""Loader of a local LeRobot-format dataset folder, through the same interface as DemoDataset.

Supports the LeRobot v2.x layout (``meta/info.json``, ``meta/tasks.jsonl``,
``data/chunk-XXX/episode_XXXXXX.parquet``) and v3.0 (``meta/tasks.parquet``,
``data/chunk-XXX/file-XXX.parquet``). Images stored in the Parquet files (features of
dtype ``image``: PNG/JPEG bytes) are decoded with Pillow. Features of dtype ``video``
are decoded with imageio when a video backend (PyAV) is installed; otherwise opening
the dataset raises an error saying so. Nothing is downloaded::

    ds = LeRobotDataset("~/data/my_lerobot_set")
    ds[0].image, ds[0].instruction, ds[0].action
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .frames import FrameDataset
from .keyframes import keyframe_flags
from .statistics import dataset_statistics


def _read_tasks(meta: Path) -> dict[int, str]:
    jsonl, parquet = meta / "tasks.jsonl", meta / "tasks.parquet"
    if jsonl.is_file():
        tasks = {}
        for n, line in enumerate(jsonl.read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    tasks[int(row["task_index"])] = str(row["task"])
                except (json.JSONDecodeError, KeyError, ValueError) as err:
                    raise ValueError(f"{jsonl}: line {n}: field 'task_index'/'task': {err}") from None
        return tasks
    if parquet.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(parquet).to_pandas()
        if "task" not in table.columns:  # v3 keeps the task string as the index
            table = table.reset_index().rename(columns={table.index.name or "index": "task"})
        return {int(i): str(t) for i, t in zip(table["task_index"], table["task"])}
    return {}


class LeRobotDataset(FrameDataset):
    """Frames of a local LeRobot dataset folder; see the module docstring."""

    def __init__(self, root, *, image_key: str | None = None, state_key: str = "observation.state", action_key: str = "action") -> None:
        import pyarrow.parquet as pq

        self.root = Path(root).expanduser()
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{info_path} not found: {self.root} is not a LeRobot dataset folder")
        self.info = json.loads(info_path.read_text())
        features = self.info.get("features")
        if not isinstance(features, dict):
            raise ValueError(f"{info_path}: field 'features': missing or not an object")
        visual = [k for k, f in features.items() if f.get("dtype") in ("image", "video")]
        if image_key is None:
            if not visual:
                raise ValueError(f"{info_path}: field 'features': no image or video feature")
            image_key = visual[0]
        if image_key not in features:
            raise ValueError(f"{info_path}: field 'features': no feature {image_key!r}; image features: {visual}")
        self.image_key, self.image_dtype = image_key, features[image_key]["dtype"]
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
                raise ValueError(f"{path}: cannot be read as Parquet ({err})") from None
            missing = sorted(columns - set(table.column_names))
            if missing:
                raise ValueError(f"{path}: field {missing[0]!r}: missing column")
            if self.image_dtype == "image" and image_key not in table.column_names:
                raise ValueError(f"{path}: field {image_key!r}: missing image column")
            tables.append((path, table))

        tasks = _read_tasks(self.root / "meta")
        episode, step, action, proprio, task_ids, self._image_cells = [], [], [], [], [], []
        for path, table in tables:
            episode.append(table.column("episode_index").to_numpy())
            step.append(table.column("frame_index").to_numpy())
            action.append(self._matrix(table, action_key, path))
            proprio.append(self._matrix(table, state_key, path) if state_key in table.column_names else np.zeros((table.num_rows, 0)))
            ids = table.column("task_index").to_numpy() if "task_index" in table.column_names else np.zeros(table.num_rows, int)
            task_ids.append(ids)
            if self.image_dtype == "image":
                self._image_cells.extend(table.column(image_key).to_pylist())
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
        if self.image_dtype == "video":
            self._decode_video(int(self.episode_index[0]))  # fail now, not in the middle of training

    @staticmethod
    def _matrix(table, key: str, path: Path) -> np.ndarray:
        try:
            return np.asarray(table.column(key).to_pylist(), dtype=np.float32).reshape(table.num_rows, -1)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: field {key!r}: expected a fixed-length number vector per row ({err})") from None

    @property
    def statistics(self) -> dict:
        """OpenVLA-layout statistics computed from this folder's actions and states."""
        return dataset_statistics(self.root.name, self.actions, self.proprio, self.num_episodes)

    def _decode_video(self, episode: int) -> np.ndarray:
        if episode in self._videos:
            return self._videos[episode]
        template = self.info.get("video_path")
        if not template or "{episode_index" not in template:
            raise ValueError(
                f"{self.root}: feature {self.image_key!r} is stored as video in a layout this loader cannot read "
                "(only per-episode video files of LeRobot v2.x are supported); convert it to image features"
            )
        chunk = episode // int(self.info.get("chunks_size", 1000))
        path = self.root / template.format(episode_chunk=chunk, video_key=self.image_key, episode_index=episode)
        try:
            import imageio.v3 as iio

            frames = np.asarray(iio.imread(path, plugin="pyav"))
        except Exception as err:  # missing backend, missing file or undecodable stream
            raise ValueError(
                f"{path}: cannot decode video feature {self.image_key!r} ({type(err).__name__}: {err}); "
                "install PyAV (`pip install av`) or store the images in the Parquet files"
            ) from None
        self._videos[episode] = frames[..., :3].astype(np.uint8)
        return self._videos[episode]

    def image(self, i: int) -> np.ndarray:
        if self.image_dtype == "video":
            return self._decode_video(int(self.episode_index[i]))[int(self.step_index[i])]
        cell = self._image_cells[i]
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if data is None and isinstance(cell, dict) and cell.get("path"):
            data = (self.root / cell["path"]).read_bytes()
        if data is None:
            raise ValueError(f"{self.root}: frame {i}: field {self.image_key!r}: no image bytes")
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
