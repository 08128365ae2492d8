"""``robosteer finetune`` / ``pretrain`` end to end on a tiny demo folder and a tiny saved policy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robosteer.cli import main
from robosteer.masks import HeadMask

from .train_helpers import single_thread, tiny_train_vla  # noqa: F401 (fixture)

IMAGE = 16


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Three short fake episodes written in the simulator's demo format."""
    pytest.importorskip("pyarrow")
    from robosteer.data.demo_format import DemoWriter
    from robosteer.sim.rollout import Episode
    from robosteer.sim.tasks import Task

    root = tmp_path_factory.mktemp("demos")
    rng = np.random.default_rng(0)
    with DemoWriter(root, image_size=IMAGE) as writer:
        for seed in range(3):
            t = 14
            actions = rng.uniform(-1, 1, (t, 7)).astype(np.float32)
            actions[:, 6] = np.where(np.arange(t) < t // 2, -1.0, 1.0)
            writer.add(Episode(task=Task.parse("lift"), seed=seed, instruction="lift the red cube", success=True,
                               length=t, images=rng.integers(0, 256, (t, IMAGE, IMAGE, 3), dtype=np.uint8),
                               proprio=rng.uniform(-1, 1, (t, 7)).astype(np.float32), actions=actions))
    return root


@pytest.fixture(scope="module")
def policy(tmp_path_factory, demos):
    stats = json.loads((demos / "dataset_statistics.json").read_text())
    vla = tiny_train_vla(norm_stats=stats)
    path = tmp_path_factory.mktemp("policy") / "tiny"
    vla.save_pretrained(path)
    return path, vla


def finetune(policy_path, demos, out, *extra):
    return main(["finetune", "--policy", str(policy_path), "--demos", str(demos), "--steps", "2", "--batch-size", "4",
                 "--out", str(out), "--log-every", "1", "--no-progress", *extra])


def test_finetune_heads_with_mask_file(tmp_path, demos, policy):
    path, vla = policy
    mask_file = HeadMask.from_heads(["llm.L1H2", "dino.L0H1"], vla.head_layout).to_json(tmp_path / "mask.json")
    assert finetune(path, demos, tmp_path / "run", "--method", "heads", "--mask", str(mask_file)) == 0
    meta = json.loads((tmp_path / "run" / "final" / "adapter.json").read_text())
    assert meta["heads"] == ["llm.L1H2", "dino.L0H1"] and meta["base_fingerprint"] == vla.fingerprint()
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3
    # policy.json names the base and the adapter; loading it gives the adapted (merged) weights
    from robosteer.app.policy import load_policy

    adapted = load_policy(tmp_path / "run" / "policy.json").vla
    q = "language_model.model.layers.1.self_attn.q_proj.weight"
    hd = vla.tower_modules()["llm"].head_dim
    head2 = slice(2 * hd, 3 * hd)
    assert not torch.equal(adapted.state_dict()[q][head2], vla.state_dict()[q][head2])
    assert torch.equal(adapted.state_dict()[q][: 2 * hd], vla.state_dict()[q][: 2 * hd])


def test_finetune_heads_top_k_knn(tmp_path, demos, policy):
    path, _ = policy
    assert finetune(path, demos, tmp_path / "run", "--method", "heads", "--top-k", "3", "--selector", "knn") == 0
    chosen = json.loads((tmp_path / "run" / "mask.json").read_text())
    assert len(chosen["heads"]) == 3 and all(h.startswith("llm.") for h in chosen["heads"])
    assert json.loads((tmp_path / "run" / "final" / "adapter.json").read_text())["heads"] == chosen["heads"]


def test_finetune_lora(tmp_path, demos, policy):
    path, _ = policy
    assert finetune(path, demos, tmp_path / "run", "--method", "lora", "--lora-r", "2") == 0
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()


def test_finetune_argument_errors(tmp_path, demos, policy, capsys):
    path, _ = policy
    assert finetune(path, demos, tmp_path / "a", "--method", "heads") == 2
    assert "exactly one of --mask FILE or --top-k K" in capsys.readouterr().err
    assert finetune(path, tmp_path / "nowhere", tmp_path / "b", "--method", "full") == 2
    assert "demonstration folder not found" in capsys.readouterr().err


def test_pretrain_collects_and_trains_the_default_shape(tmp_path):
    """The one-command pipeline at toy scale: expert demos (clean + noisy) of every pretraining task, then training."""
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--episodes", "1", "--noisy-episodes", "1", "--workers", "1",
                 "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--augment-shift", "1",
                 "--no-progress"]) == 0
    from robosteer.models import load_vla
    from robosteer.models.default import DEFAULT_SHAPE
    from robosteer.data.dataset import DemoDataset

    assert len(DemoDataset(out / "demos" / "clean").tasks) > 0 and len(DemoDataset(out / "demos" / "noisy").tasks) > 0
    clean = DemoDataset(out / "demos" / "clean")
    assert sorted(set(clean.tasks)) == ["lift/base", "place/base", "push/base"]
    assert clean.states is not None and clean.states.shape == (len(clean), 6)  # privileged targets for the aux loss
    assert "aux_loss" in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    recipe = json.loads((out / "pretrain_config.json").read_text())
    assert recipe["augment_shift"] == 1 and recipe["augment"] is True  # the random shift reaches the training run
    state = json.loads(next((out / "checkpoints").glob("step-*/state.json")).read_text())
    assert state["config"]["augment_shift"] == 1 and state["config"]["augment_crop_scale"] == 1.0
    vla = load_vla(out / "final")
    assert not any("aux_state_head" in name for name in vla.state_dict())  # shipped without the read-out
    assert vla.head_layout.shape("llm") == (DEFAULT_SHAPE["llm_layers"], DEFAULT_SHAPE["llm_heads"])
    assert "robosteer_sim" in vla.config.norm_stats and vla.config.proprio_dim == 7
    # running the same command again reuses the demos and finds the run finished
    assert main(["pretrain", "--out", str(out), "--episodes", "1", "--noisy-episodes", "1", "--workers", "1",
                 "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--augment-shift", "1",
                 "--no-progress"]) == 0


def test_finetune_rerun_of_a_finished_run_reports_its_training_time(tmp_path, demos, policy):
    """A study cell resumed after its training finished must not record ~0 s of training."""
    from robosteer.app.experiment import finetune as run_finetune
    from robosteer.app.experiment import steering_config
    from robosteer.data.dataset import DemoDataset
    from robosteer.train.strategies import LoraSettings

    path, _ = policy
    config, lora = steering_config(tmp_path / "run", steps=2, batch_size=4), LoraSettings(r=2, alpha=1)
    first = run_finetune(path, DemoDataset(demos), "lora", config, lora=lora)
    again = run_finetune(path, DemoDataset(demos), "lora", config, lora=lora)
    assert first.resumed_at_step == 0 and again.resumed_at_step == 2
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert again.train_seconds == saved["elapsed_s"] and 0 < again.train_seconds <= first.train_seconds


def test_finetune_top_k_selection_uses_the_run_seed(tmp_path, demos, policy):
    """``--selector random --seed S`` draws the random scores of seed S (it was always seed 0)."""
    from robosteer.circuits.config import DiscoverConfig
    from robosteer.circuits.discover import discover
    from robosteer.data.folders import open_demos

    path, vla = policy
    chosen = {}
    for seed in (0, 3):
        out = tmp_path / f"seed{seed}"
        assert finetune(path, demos, out, "--method", "heads", "--top-k", "3", "--selector", "random",
                        "--seed", str(seed)) == 0
        chosen[seed] = json.loads((out / "mask.json").read_text())["heads"]
        expected = discover(vla, open_demos(demos), DiscoverConfig(method="random", top_k=3, seed=seed)).mask
        assert chosen[seed] == [str(h) for h in expected.heads]
    assert chosen[0] != chosen[3]


def test_pretrain_with_openvla_oft_switches(tmp_path):
    """`robosteer pretrain` with the wrist camera, continuous actions, chunks, start jitter and the weight average:
    the switches reach the demos, the model and the training targets, and the shipped weights are the average."""
    out = tmp_path / "oft"
    assert main(["pretrain", "--out", str(out), "--episodes", "1", "--noisy-episodes", "0", "--workers", "1",
                 "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--label-smoothing", "0",
                 "--action-head", "l1-regression", "--action-chunk", "2", "--cameras", "agentview,wrist",
                 "--aux-weight", "0", "--start-jitter", "0.05", "--ema-decay", "0.5", "--no-progress"]) == 0
    from safetensors.torch import load_file

    from robosteer.data.dataset import DemoDataset
    from robosteer.models import load_vla

    assert DemoDataset(out / "demos" / "clean").cameras == ("agentview", "wrist")
    vla = load_vla(out / "final")
    assert (vla.config.n_views, vla.config.action_head, vla.config.action_chunk) == (2, "l1-regression", 2)
    recipe = json.loads((out / "pretrain_config.json").read_text())
    assert recipe["cameras"] == ["agentview", "wrist"] and recipe["action_chunk"] == 2
    assert DemoDataset(out / "demos" / "clean").meta["collect_config"]["start_jitter"] == 0.05
    last = sorted((out / "checkpoints").glob("step-*"))[-1]
    average, trained = load_file(str(last / "ema.safetensors")), load_file(str(last / "trainable.safetensors"))
    shipped = vla.state_dict()
    name = next(k for k in average if "action_head" in k)
    assert not torch.equal(average[name], trained[name])  # two steps at decay 0.5: the average lags the weights
    assert torch.equal(shipped[name], average[name].to(shipped[name].dtype))


def test_pretrain_refuses_inconsistent_switches():
    from robosteer.app.pretrain import PretrainConfig

    with pytest.raises(ValueError, match="label_smoothing=1.0 smooths action tokens"):
        PretrainConfig(out_dir="o", label_smoothing=1.0)  # the default head is the L1 regression head
    tokens = dict(action_head="tokens", film=False, label_smoothing=1.0)  # v1's recipe
    assert PretrainConfig(out_dir="o", **tokens).model_changes() == {"n_views": 2}
    with pytest.raises(ValueError, match="action_chunk=4: chunks of more than one action need"):
        PretrainConfig(out_dir="o", action_chunk=4, **tokens)
    assert PretrainConfig(out_dir="o", cameras=("agentview",)).cameras is None  # one view, canonical
    assert PretrainConfig(out_dir="o").cameras == ("agentview", "wrist")  # the default: v5's two views


def test_finetune_a_pi0_folder_selects_and_trains_heads_on_action_chunks(tmp_path, demos):
    from robosteer.models.pi0 import tiny_pi0

    base = tiny_pi0(seed=0)  # state 7, action 7, chunk 4: the CLI wraps the demos in ActionChunks(demos, 4)
    folder = base.save_pretrained(tmp_path / "pi0")
    assert finetune(folder, demos, tmp_path / "run", "--method", "heads", "--top-k", "2", "--selector", "knn",
                    "--no-augment") == 0
    chosen = json.loads((tmp_path / "run" / "mask.json").read_text())["heads"]
    assert len(chosen) == 2 and all(h.startswith("llm.L0") for h in chosen)  # the VLM's last layer is never chosen
    meta = json.loads((tmp_path / "run" / "final" / "adapter.json").read_text())
    assert meta["heads"] == chosen and meta["base_fingerprint"] == base.fingerprint()
