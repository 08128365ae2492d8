"""Streaming head activations to disk while recording (``record_heads(out=...)``, ``HeadActivationsWriter``)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robosteer.circuits import record as record_module
from robosteer.circuits.record import HeadActivations, RecordConfig, record_heads
from robosteer.circuits.record_stream import HeadActivationsWriter
from robosteer.data.frames import Frame
from robosteer.models.tiny import tiny_vla
from robosteer.sites import HeadLayout


@pytest.fixture(scope="module")
def setup():
    vla = tiny_vla(seed=7, proprio_dim=7)
    rng = np.random.default_rng(0)
    frames = [{"image": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8),
               "instruction": ["pick up the red cube", "lift the green ball now"][ep % 2],
               "action": rng.uniform(-0.9, 0.9, 7), "proprio": rng.uniform(-1, 1, 7),
               "episode": ep, "step": step, "keyframe": step in (0, 2, 4)}
              for ep in range(3) for step in range(5)]
    return vla, frames


CONFIG = RecordConfig(towers=("llm", "dino"), batch_size=4)  # 9 keyframes: batches of 4, 4 and 1


@pytest.fixture(scope="module")
def streamed(setup, tmp_path_factory):
    vla, frames = setup
    out = tmp_path_factory.mktemp("stream") / "acts"
    return out, record_heads(vla, frames, CONFIG, progress=False, out=out)


def test_streamed_equals_in_memory_recording(setup, streamed):
    vla, frames = setup
    out, disk = streamed
    memory = record_heads(vla, frames, CONFIG, progress=False)
    assert list(disk.acts) == list(memory.acts) == ["llm", "dino"]
    for tower in memory.acts:
        assert disk.acts[tower].dtype == torch.float32 and torch.equal(disk.acts[tower], memory.acts[tower])
    for field in ("actions", "episodes", "frames"):
        assert np.array_equal(getattr(disk, field), getattr(memory, field))
    assert (disk.layout, disk.position, disk.fingerprint, disk.instructions) == \
        (memory.layout, memory.position, memory.fingerprint, memory.instructions)
    assert disk.knn_scores(probe="x").to_frame().equals(memory.knn_scores(probe="x").to_frame())
    assert torch.equal(HeadActivations.load(out).acts["llm"], memory.acts["llm"])
    assert sorted(p.name for p in out.iterdir()) == ["acts.dino.npy", "acts.llm.npy", "index.json",
                                                     "targets.safetensors"]
    assert not list(out.parent.glob(".*partial"))  # the temporary folder was renamed, not left behind


def mapped_file(address: int) -> str:
    """The file mapped at ``address`` in this process ("" if none), from /proc/self/maps (Linux)."""
    for line in open("/proc/self/maps"):
        fields = line.split()
        start, end = (int(a, 16) for a in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else ""
    return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps")
def test_streamed_activations_are_memory_mapped(streamed):
    out, disk = streamed
    again = HeadActivations.load(out)
    assert mapped_file(again.acts["llm"].data_ptr()).endswith("acts.llm.npy")
    assert mapped_file(again.acts["dino"].data_ptr()).endswith("acts.dino.npy")
    again.acts["llm"][0] = 123.0  # copy-on-write: the file keeps the recorded values
    assert torch.equal(HeadActivations.load(out).acts["llm"], disk.acts["llm"])


def test_interrupted_recording_leaves_no_folder_and_keeps_the_old_one(setup, tmp_path, monkeypatch):
    vla, frames = setup
    real = record_module.SequenceBuilder.build
    calls = []

    def fails_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(record_module.SequenceBuilder, "build", fails_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        record_heads(vla, frames, CONFIG, progress=False, out=tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a partial one
    with pytest.raises(FileNotFoundError, match="activation index not found"):
        HeadActivations.load(tmp_path / "new")
    monkeypatch.setattr(record_module.SequenceBuilder, "build", real)
    old = record_heads(vla, frames, RecordConfig(towers=("llm",), batch_size=4), progress=False, out=tmp_path / "old")
    calls.clear()
    monkeypatch.setattr(record_module.SequenceBuilder, "build", fails_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        record_heads(vla, frames, CONFIG, progress=False, out=tmp_path / "old")
    kept = HeadActivations.load(tmp_path / "old")
    assert list(kept.acts) == ["llm"] and torch.equal(kept.acts["llm"], old.acts["llm"])


def corrupt_no_index(folder):
    (folder / "index.json").unlink()


def corrupt_truncate(folder):
    path = folder / "acts.llm.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_shape(folder):
    index = json.loads((folder / "index.json").read_text())
    index["n_frames"] = 10
    (folder / "index.json").write_text(json.dumps(index))


def corrupt_missing_tower(folder):
    (folder / "acts.dino.npy").unlink()


def corrupt_pickled(folder):
    np.save(folder / "acts.llm.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("corrupt,error,match", [
    (corrupt_no_index, ValueError, "incomplete streamed recording"),  # what a killed run leaves behind
    (corrupt_truncate, ValueError, "acts.llm.npy is truncated"),
    (corrupt_shape, ValueError, r"index.json says float32 \(10, 2, 4, 8\)"),
    (corrupt_missing_tower, FileNotFoundError, "acts.dino.npy"),
    (corrupt_pickled, ValueError, "not a valid .npy file"),
])
def test_damaged_folder_gives_a_clear_error(streamed, tmp_path, corrupt, error, match):
    out, _ = streamed
    copy = shutil.copytree(out, tmp_path / "acts")
    corrupt(copy)
    with pytest.raises(error, match=match):
        HeadActivations.load(copy)


def test_writer_refuses_an_incomplete_or_inconsistent_stream(tmp_path):
    layout = HeadLayout({"llm": (2, 4)})
    args = (np.zeros((5, 3)), np.arange(5), np.arange(5))
    with pytest.raises(ValueError, match="only 4 of 5 frames were appended"):
        with HeadActivationsWriter(tmp_path / "short", *args, layout=layout) as writer:
            writer.append({"llm": torch.zeros(4, 2, 4, 8)})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"batch shape \(1, 2, 4, 6\)"):
        with HeadActivationsWriter(tmp_path / "shape", *args, layout=layout) as writer:
            writer.append({"llm": torch.zeros(4, 2, 4, 8)})
            writer.append({"llm": torch.zeros(1, 2, 4, 6)})
    with pytest.raises(ValueError, match="6 frames appended; the writer was made for 5"):
        with HeadActivationsWriter(tmp_path / "long", *args, layout=layout) as writer:
            writer.append({"llm": torch.zeros(6, 2, 4, 8)})
    assert list(tmp_path.iterdir()) == []
    with HeadActivationsWriter(tmp_path / "ok", *args, layout=layout, position="last_prompt") as writer:
        writer.append({"llm": torch.ones(2, 2, 4, 8)})
        writer.append({"llm": 2 * torch.ones(3, 2, 4, 8)})
    acts = HeadActivations.load(tmp_path / "ok")
    assert acts.acts["llm"][:, 0, 0, 0].tolist() == [1, 1, 2, 2, 2] and acts.position == "last_prompt"


class _Frames:
    """The little of a FrameDataset that knn discovery reads: len and items (``Frame`` objects)."""

    def __init__(self, frames):
        self.frames = frames

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return Frame.coerce(self.frames[i])


def test_discover_stream_writes_activations_and_scores_the_same(setup, tmp_path):
    from robosteer.circuits.discover import DiscoverConfig, discover

    vla, frames = setup
    streamed = discover(vla, _Frames(frames), DiscoverConfig(top_k=2, stream=True), out=tmp_path / "a")
    plain = discover(vla, _Frames(frames), DiscoverConfig(top_k=2), out=tmp_path / "b")
    assert streamed.files["activations"] == tmp_path / "a" / "activations" and "activations" not in plain.files
    assert len(HeadActivations.load(streamed.files["activations"])) == 9
    assert streamed.scores.to_frame().equals(plain.scores.to_frame()) and streamed.mask.heads == plain.mask.heads
    with pytest.raises(ValueError, match="needs an output folder"):
        discover(vla, _Frames(frames), DiscoverConfig(stream=True))


def test_discovery_names_the_demonstrations_task_and_the_policy_in_the_head_map(setup, tmp_path):
    from robosteer.circuits.discover import DiscoverConfig, discover

    vla, frames = setup
    data = _Frames(frames)
    data.meta = {"collect_config": {"tasks": ["place/paraphrase"]}}
    vla.source = "runs/v5"
    found = discover(vla, data, DiscoverConfig(top_k=2), out=tmp_path)
    assert (found.scores.meta["task"], found.scores.meta["policy"]) == ("place/paraphrase", "runs/v5")
    from robosteer.viz import head_map

    subtitle = head_map(found.scores, column=found.column, mask=found.mask).layout.title.text.split("<br>")[1]
    assert "task place/paraphrase" in subtitle and "policy runs/v5 (model " in subtitle
    page = found.files["headmap"].read_text().replace("\\/", "/")  # the page written is that figure
    assert "task place" in page and "paraphrase" in page
    del vla.source
    assert "policy" not in discover(vla, _Frames(frames), DiscoverConfig(top_k=2)).scores.meta  # nothing invented
