"""Property-based fuzzing of the parsers of files a user may receive (issue #22).

Each parser gets random JSON values, mutations of a valid file (a field deleted, replaced by
a random value or swapped to another type) and damaged safetensors (truncated, byte-flipped).
It must return a valid object or raise ``FileFormatError`` (robosteer's error for a bad file,
naming the file), never another exception. Bounded to run in well under a minute on one core;
``INPUTS_TRIED`` counts every input (printed at the end with ``pytest -s``).
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from robosteer.data.demo_format import FORMAT_NAME, FORMAT_VERSION, read_meta  # noqa: E402
from robosteer.data.statistics import check_statistics, dataset_statistics  # noqa: E402
from robosteer.files import FileFormatError, read_json  # noqa: E402
from robosteer.masks import HeadMask  # noqa: E402
from robosteer.models.config import VLAConfig  # noqa: E402
from robosteer.sites import HeadLayout  # noqa: E402
from tests.conftest import REPO  # noqa: E402

FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
INPUTS_TRIED = {"total": 0, "parsed": 0, "refused": 0}
LAYOUT = HeadLayout({"llm": (2, 4), "dino": (3, 2)})
CONFIGS = [REPO / "tests" / "fixtures" / "openvla-tiny-a" / "config.json",
           REPO / "tests" / "fixtures" / "openvla-oft-tiny-a" / "config.json",
           REPO / "tests" / "fixtures" / "openvla-7b-config.json",
           REPO / "robosteer" / "assets" / "openvla-tiny-franka" / "config.json"]

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=10))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                               max_size=4), max_leaves=10)


def load_config(path, strict: bool = False) -> VLAConfig:
    return VLAConfig.from_hf_dict(read_json(path, "model config"), source=path, strict=strict)


@pytest.fixture(scope="module", autouse=True)
def report_count():
    yield
    print(f"\ntest_fuzz_parsers: {INPUTS_TRIED['total']} inputs tried ({INPUTS_TRIED['parsed']} parsed, "
          f"{INPUTS_TRIED['refused']} refused with FileFormatError)")


def _paths(doc, prefix=()):
    """Every path into a JSON document (list elements: the first two of each list)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc[:2]) if isinstance(doc, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _swapped(value) -> list:
    """Values of another JSON type that a careless edit could leave in place of ``value``."""
    out = [None, str(value)[:20], [value], {"value": value}]
    if isinstance(value, bool):
        out += [int(value)]
    elif isinstance(value, (int, float)):
        out += [True, -value, value * 10**6, float(value) + 0.5]
    elif isinstance(value, str):
        out += [len(value), value.upper(), ""]
    elif isinstance(value, list):
        out += [value[:1], [], dict(enumerate(map(str, value)))]
    elif isinstance(value, dict):
        out += [list(value.values()), {}]
    return out


@st.composite
def mutated(draw, doc):
    """``doc`` with one to three fields deleted, replaced by a random value, or swapped to another type."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, op = path[-1], draw(st.sampled_from(["delete", "replace", "swap"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        else:
            parent[key] = draw(st.sampled_from(_swapped(parent[key])))
    return doc


def documents(valid):
    """A valid document mutated (mostly), or a random JSON value, or a random text."""
    return st.one_of(mutated(valid), mutated(valid), mutated(valid), json_values, st.text(max_size=30))


@st.composite
def damaged_bytes(draw, data: bytes):
    """``data`` truncated, with bytes flipped or inserted, or replaced by random bytes."""
    op = draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
    if op == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if op == "random":
        return draw(st.binary(max_size=200))
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(out) - 1))
        if op == "flip":
            out[i] ^= draw(st.integers(1, 255))
        else:
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


def write(path, doc) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def parses_or_clear_error(parse, path):
    """Run ``parse()``: the result, or None after a ``FileFormatError`` that names ``path``."""
    INPUTS_TRIED["total"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = parse()
    except FileFormatError as err:
        assert path.name in str(err) or path.parent.name in str(err), f"error does not name the file: {err}"
        INPUTS_TRIED["refused"] += 1
        return None
    INPUTS_TRIED["parsed"] += 1
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --- config.json ------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_config_json(work, data):
    valid = json.loads(data.draw(st.sampled_from(CONFIGS)).read_text())
    path = work / "config.json"
    write(path, data.draw(documents(valid)))
    strict = data.draw(st.booleans())
    cfg = parses_or_clear_error(lambda: load_config(path, strict=strict), path)
    if cfg is not None:
        assert isinstance(cfg, VLAConfig)
        cfg.llama_kwargs(), cfg.action_dim, cfg.to_hf_dict()


def test_valid_configs_still_parse_strictly_and_round_trip():
    for path in CONFIGS:
        cfg = load_config(path, strict=True)
        again = VLAConfig.from_hf_dict(cfg.to_hf_dict(), strict=True)
        assert again.replace(hf_extra={}) == cfg.replace(hf_extra={})  # the OFT fixture's extras change form


# --- head masks: JSON and safetensors ---------------------------------------------------------
def _mask() -> HeadMask:
    return HeadMask.from_heads(["llm.L0H1", "llm.L1H3", "dino.L2H0"], LAYOUT, scores=[0.5, 0.25, 0.125],
                               column="knn", method="knn", data="fuzz", fingerprint="abc")


def _mask_fields(work) -> dict:
    """The fields of a valid mask file, as ``to_json`` writes them."""
    _mask().to_json(work / "valid.json")
    return json.loads((work / "valid.json").read_text())


@FUZZ
@given(data=st.data())
def test_mask_json(work, data):
    path = work / "mask.json"
    write(path, data.draw(documents(_mask_fields(work))))
    layout = data.draw(st.sampled_from([None, LAYOUT]))
    mask = parses_or_clear_error(lambda: HeadMask.from_json(path, layout=layout), path)
    if mask is not None:
        again = work / "again.json"
        mask.to_json(again)
        assert HeadMask.from_json(again).heads == mask.heads


@FUZZ
@given(data=st.data())
def test_mask_safetensors(work, data):
    from safetensors.torch import save

    path = work / "mask.safetensors"
    valid = work / "valid.safetensors"
    _mask().save_safetensors(valid)
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(damaged_bytes(valid.read_bytes())))
    else:  # well-formed safetensors, malformed metadata or tensors
        fields = data.draw(mutated(_mask_fields(work)))
        tensors = dict(_mask().tensors())
        if data.draw(st.booleans()):
            import torch

            shape = tuple(data.draw(st.lists(st.integers(0, 4), max_size=3)))
            dtype = data.draw(st.sampled_from([torch.bool, torch.float32, torch.int64, torch.uint8]))
            tensors[data.draw(st.sampled_from(["llm", "dino", "other"]))] = torch.zeros(shape, dtype=dtype)
        path.write_bytes(save(tensors, metadata={k: json.dumps(v) for k, v in fields.items()}))
    mask = parses_or_clear_error(lambda: HeadMask.load_safetensors(path, layout=LAYOUT), path)
    assert mask is None or isinstance(mask, HeadMask)


# --- dataset meta.json and dataset_statistics.json --------------------------------------------
def _stats() -> dict:
    rng = np.random.default_rng(0)
    return dataset_statistics("robosteer_sim", rng.normal(size=(20, 7)), rng.normal(size=(20, 7)), 2)


@FUZZ
@given(data=st.data())
def test_dataset_meta_json(work, data):
    valid = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "image_size": [16, 16], "camera": "agentview",
             "cameras": ["agentview", "wrist"], "tasks": ["lift/base"], "num_episodes": 2, "num_steps": 20,
             "dataset_statistics": _stats()}
    root = work / "demos"
    root.mkdir(exist_ok=True)
    write(root / "meta.json", data.draw(documents(valid)))
    meta = parses_or_clear_error(lambda: read_meta(root), root / "meta.json")
    assert meta is None or isinstance(meta, dict)


@FUZZ
@given(data=st.data())
def test_dataset_statistics_json(work, data):
    path = work / "dataset_statistics.json"
    write(path, data.draw(documents(_stats())))
    stats = parses_or_clear_error(lambda: check_statistics(read_json(path, "dataset statistics"), path), path)
    if stats is not None:  # what normalising reads is there and consistent
        for entry in stats.values():
            assert len(entry["action"]["q01"]) == len(entry["action"]["q99"]) > 0


# --- LeRobot meta/info.json and meta/tasks.jsonl ----------------------------------------------
def _lerobot_info() -> dict:
    return {"codebase_version": "v2.1", "fps": 10, "chunks_size": 1000,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": {"observation.images.image": {"dtype": "image", "shape": [8, 8, 3]},
                         "observation.state": {"dtype": "float32", "shape": [3]},
                         "action": {"dtype": "float32", "shape": [7]}}}


@pytest.fixture(scope="module")
def lerobot_root(work):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    root = work / "lerobot"
    (root / "meta").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for ep in range(2):
        pngs = []
        for _ in range(3):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
            pngs.append({"bytes": buf.getvalue(), "path": None})
        pq.write_table(pa.table({"observation.images.image": pngs, "observation.state": [[0.0] * 3] * 3,
                                 "action": [[*rng.uniform(-1, 1, 6), g] for g in (-1.0, -1.0, 1.0)],
                                 "episode_index": [ep] * 3, "frame_index": [0, 1, 2], "task_index": [ep] * 3}),
                       root / "data" / "chunk-000" / f"episode_{ep:06d}.parquet")
    return root


@FUZZ
@given(data=st.data())
def test_lerobot_meta(lerobot_root, data):
    from robosteer.data.lerobot import LeRobotDataset

    meta = lerobot_root / "meta"
    write(meta / "info.json", data.draw(documents(_lerobot_info())))
    rows = data.draw(documents([{"task_index": 0, "task": "pick up the cube"}, {"task_index": 1, "task": "push it"}]))
    lines = [json.dumps(r) for r in rows] if isinstance(rows, list) else [json.dumps(rows)]
    (meta / "tasks.jsonl").write_text("\n".join(lines))
    ds = parses_or_clear_error(lambda: LeRobotDataset(lerobot_root), meta / "info.json")
    if ds is not None:
        frame = parses_or_clear_error(lambda: ds[0], lerobot_root)
        assert frame is None or frame.image.dtype == np.uint8


# --- adapters: heads adapter (adapter.json + adapter.safetensors), LoRA (robosteer.json + tensors) ---
def damage_adapter(data, saved, folder, meta_name: str, tensors_name: str) -> None:
    """Write into ``folder`` the adapter ``saved`` with its JSON, its tensors or both damaged."""
    meta, tensors = json.loads((saved / meta_name).read_text()), (saved / tensors_name).read_bytes()
    what = data.draw(st.sampled_from(["meta", "tensors", "both"]))
    write(folder / meta_name, data.draw(documents(meta)) if what != "tensors" else meta)
    (folder / tensors_name).write_bytes(data.draw(damaged_bytes(tensors)) if what != "meta" else tensors)


@pytest.fixture(scope="module")
def adapter(work):
    from robosteer.models.tiny import tiny_vla
    from robosteer.train.adapters import save_heads_adapter
    from robosteer.train.head_deltas import HeadDeltas

    vla = tiny_vla(seed=0)
    deltas = HeadDeltas.attach(vla, HeadMask.from_heads(["llm.L0H1", "llm.L1H3"], vla.head_layout), kv=True)
    save_heads_adapter(deltas, work / "adapter")
    deltas.remove()
    return vla, work / "adapter"


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_heads_adapter(adapter, data):
    from robosteer.train.adapters import HEADS_META, HEADS_TENSORS, load_heads_adapter
    from robosteer.train.head_deltas import SliceDelta

    vla, saved = adapter
    folder = saved.parent / "fuzzed_adapter"
    folder.mkdir(exist_ok=True)
    damage_adapter(data, saved, folder, HEADS_META, HEADS_TENSORS)
    deltas = parses_or_clear_error(lambda: load_heads_adapter(vla, folder), folder / HEADS_META)
    if deltas is not None:
        deltas.remove()
    assert not any(isinstance(m, SliceDelta) for m in vla.modules()), "a failed load left deltas on the model"


@pytest.fixture(scope="module")
def lora(adapter, work):
    pytest.importorskip("peft")
    from peft import LoraConfig, inject_adapter_in_model

    from robosteer.train.adapters import save_lora_adapter

    base, _ = adapter
    vla = copy.deepcopy(base)
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]), vla)

    class Settings:
        def to_dict(self):
            return {"r": 2}

    save_lora_adapter(vla, work / "lora", Settings(), base.fingerprint())
    return base, work / "lora"


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_lora_adapter(lora, data):
    import shutil

    from robosteer.train.adapters import LORA_META, LORA_TENSORS, load_lora_adapter

    base, saved = lora
    folder = saved.parent / "fuzzed_lora"
    shutil.copytree(saved, folder, dirs_exist_ok=True)
    damage_adapter(data, saved, folder, LORA_META, LORA_TENSORS)
    vla = parses_or_clear_error(lambda: load_lora_adapter(copy.deepcopy(base), folder), folder / LORA_META)
    assert vla is None or hasattr(vla, "peft_config")
