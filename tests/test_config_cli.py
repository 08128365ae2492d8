"""Command-line flags generated from the config dataclasses (``robosteer.config_cli``) and the commands using them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from robosteer.app.pretrain import PretrainConfig
from robosteer.app.study import StudyConfig
from robosteer.circuits.config import DiscoverConfig
from robosteer.config_cli import ConfigArguments, FieldType, field_default, field_type
from robosteer.sim.collect_config import CollectConfig
from robosteer.train.config import TrainConfig
from robosteer.train.strategies import LoraSettings


@dataclass(frozen=True)
class Toy:
    name: str = field(metadata={"help": "required: no default"})
    count: int = field(default=3, metadata={"help": "how many"})
    rate: float = 0.5
    mode: str = field(default="a", metadata={"choices": ("a", "b")})
    on: bool = field(default=True, metadata={"help": "the feature"})
    off: bool = False
    pair: tuple[float, float] = field(default=(0.9, 0.999), metadata={"metavar": ("P1", "P2")})
    items: tuple[str, ...] = ("x", "y")
    seeds: tuple[int, ...] = (0, 1)
    clip: float | None = 1.0
    key: str | None = None
    picks: tuple[str, ...] = field(default=("a",), metadata={"choices": ("a", "b", "c")})


def parser_for(arguments: ConfigArguments) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    arguments.add_to(p)
    return p


def flags_of(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings} - {"-h", "--help"}


def test_one_flag_per_field_with_the_dataclass_defaults():
    args = ConfigArguments(Toy)
    p = parser_for(args)
    assert flags_of(p) == {"--name", "--count", "--rate", "--mode", "--no-on", "--off", "--pair", "--items", "--seeds",
                           "--clip", "--key", "--picks"}
    parsed = p.parse_args(["--name", "n"])
    assert args.build(parsed) == Toy(name="n")  # round trip: nothing given -> the default instance
    defaults = {f.name: f.default for f in dataclasses.fields(Toy) if f.name != "name"}
    assert {k: v for k, v in args.values(parsed).items() if k != "name"} == defaults


def test_types_bools_tuples_and_optionals():
    args = ConfigArguments(Toy)
    parsed = parser_for(args).parse_args(["--name", "n", "--count", "7", "--rate", "2e-3", "--mode", "b", "--no-on",
                                          "--off", "--pair", "0.8", "0.95", "--items", "p, q,,r", "--seeds", "3,4",
                                          "--clip", "none", "--key", "k", "--picks", "b,c"])
    assert args.build(parsed) == Toy(name="n", count=7, rate=2e-3, mode="b", on=False, off=True, pair=(0.8, 0.95),
                                     items=("p", "q", "r"), seeds=(3, 4), clip=None, key="k", picks=("b", "c"))
    assert args.build(parsed, count=1).count == 1  # changes override parsed values
    assert field_type(float | None, "x") == FieldType(float, optional=True)
    assert field_type(tuple[int, ...], "x") == FieldType(int, listed=True)
    assert field_type(tuple[float, float], "x") == FieldType(float, count=2)


@pytest.mark.parametrize("argv, message", [
    (["--count", "x"], "argument --count: invalid int value: 'x'"),
    (["--rate", "fast"], "argument --rate: invalid float value: 'fast'"),
    (["--mode", "c"], "argument --mode: invalid choice: 'c'"),
    (["--seeds", "1,two"], "argument --seeds: expected comma-separated int values, got '1,two'"),
    (["--picks", "a,z"], "argument --picks: invalid choice 'z' in 'a,z' (choose from a, b, c)"),
    (["--pair", "0.9"], "argument --pair: expected 2 arguments"),
    ([], "the following arguments are required: --name"),
])
def test_an_invalid_value_is_argparses_error_naming_the_flag(argv, message, capsys):
    p = parser_for(ConfigArguments(Toy))
    with pytest.raises(SystemExit) as err:
        p.parse_args((["--name", "n"] if argv else []) + argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_names_prefix_exclusions_and_help():
    args = ConfigArguments(Toy, only=("count", "on", "items"), prefix="toy", flags={"on": "--skip-on"},
                           helps={"on": "skip the feature"}, required=("count",))
    p = parser_for(args)
    assert flags_of(p) == {"--toy-count", "--skip-on", "--toy-items"}
    assert args.build(p.parse_args(["--toy-count", "2", "--skip-on"]), name="n") == Toy(name="n", count=2, on=False)
    text = p.format_help()
    assert "how many" in text and "skip the feature" in text and "comma-separated; default: x,y" in text
    assert "turn off: the feature" in parser_for(ConfigArguments(Toy)).format_help()
    with pytest.raises(SystemExit):
        p.parse_args([])  # --toy-count is required here


def test_misnamed_fields_and_unsupported_types_are_refused():
    with pytest.raises(ValueError, match=r"ConfigArguments.flags names no field of Toy: \['nope'\]"):
        ConfigArguments(Toy, flags={"nope": "--x"})
    with pytest.raises(ValueError, match="must start with '--'"):
        ConfigArguments(Toy, flags={"count": "count"})
    with pytest.raises(TypeError, match="field 'target_modules'"):
        parser_for(ConfigArguments(LoraSettings))  # str | tuple has no one command-line form
    with pytest.raises(ValueError, match="TrainConfig.out_dir has no default"):
        field_default(TrainConfig, "out_dir")
    assert field_default(TrainConfig, "batch_size") == 16


def parse(argv: list[str]) -> argparse.Namespace:
    from robosteer.cli import build_parser

    return build_parser().parse_args(argv)


def test_the_commands_flags_give_the_dataclasses_defaults():
    from robosteer.app.cli import LORA_ARGUMENTS, PRETRAIN_ARGUMENTS, SELECT_ARGUMENTS, TRAIN_ARGUMENTS
    from robosteer.app.study import STUDY_ARGUMENTS
    from robosteer.circuits.cli import DISCOVER_ARGUMENTS
    from robosteer.sim.cli import COLLECT_ARGUMENTS

    args = parse(["finetune", "--demos", "d", "--out", "o", "--steps", "5"])
    assert TRAIN_ARGUMENTS.build(args) == TrainConfig(out_dir="o", steps=5)
    assert LORA_ARGUMENTS.build(args) == LoraSettings()
    assert SELECT_ARGUMENTS.values(args) == {"method": "knn", "towers": ("llm",)}
    assert (args.policy, args.method, args.mask, args.top_k, args.kv) == ("default", "heads", None, None, False)
    assert PRETRAIN_ARGUMENTS.build(parse(["pretrain", "--out", "o"])) == PretrainConfig(out_dir="o")
    assert DISCOVER_ARGUMENTS.build(parse(["discover", "--demos", "d", "--out", "o"])) == DiscoverConfig()
    assert COLLECT_ARGUMENTS.build(parse(["collect", "--task", "lift", "--out", "o"]), tasks=("lift",)) == \
        CollectConfig(tasks=("lift",))
    assert STUDY_ARGUMENTS.build(parse(["study", "--out", "o"])) == StudyConfig(out_dir="o")
    # the flags that existed before the flags were generated keep their names and meaning
    args = parse(["finetune", "--demos", "d", "--out", "o", "--steps", "5", "--no-augment", "--no-resume",
                  "--no-progress", "--betas", "0.9", "0.95", "--lora-r", "4", "--towers", "llm,dino"])
    assert TRAIN_ARGUMENTS.build(args) == TrainConfig(out_dir="o", steps=5, augment=False, resume=False,
                                                      progress=False, betas=(0.9, 0.95))
    assert LORA_ARGUMENTS.build(args).r == 4 and SELECT_ARGUMENTS.values(args)["towers"] == ("llm", "dino")
    discover = DISCOVER_ARGUMENTS.build(parse(["discover", "--demos", "d", "--out", "o", "--all-frames"]))
    assert discover.keyframes_only is False


def test_the_method_choices_come_from_the_registries():
    from robosteer.circuits.config import METHODS as SELECTORS
    from robosteer.train.strategies import METHODS

    def choices(command: str, flag: str, *argv: str):
        from robosteer.cli import build_parser

        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)

    assert choices("finetune", "--method") == METHODS
    assert choices("finetune", "--selector") == SELECTORS == choices("discover", "--method")


def test_evaluates_hand_kept_image_size_is_the_simulators_default():
    pytest.importorskip("robosuite")
    from robosteer.sim.env import SimConfig

    assert parse(["evaluate", "--task", "lift"]).image_size == SimConfig().image_size == CollectConfig.image_size


def test_the_command_line_loads_neither_torch_nor_numpy():
    code = ("import sys; from robosteer.cli import build_parser; build_parser(); "
            "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_pretrain_config_derives_the_one_train_config_it_runs():
    """PretrainConfig exposes TrainConfig settings under their names; the TrainConfig pretraining runs is the shipped
    recipe (docs/default_policy_pretrain_config.json), and TrainConfig's checks fire before any collection."""
    from robosteer.app.pretrain import TRAINING_FIELDS

    expected = TrainConfig(out_dir="o", steps=8000, batch_size=32, lr=5e-4, schedule="cosine", warmup_steps=500,
                           min_lr_ratio=0.05, betas=(0.9, 0.95), weight_decay=0.01, seed=0, augment=True,
                           augment_shift=0, augment_crop_scale=1.0, augment_hue=0.0, label_smoothing=0.0,
                           ema_decay=0.999, keep_checkpoints=3,
                           unnorm_key="robosteer_sim", ckpt_every=500, log_every=50, progress=True)
    config = PretrainConfig(out_dir="o")
    assert config.train_config() == expected
    assert all(getattr(config, name) == getattr(expected, name) for name in TRAINING_FIELDS)
    shipped = json.loads((Path(__file__).parents[1] / "docs" / "default_policy_pretrain_config.json").read_text())
    assert all(shipped[name] == getattr(expected, name) for name in TRAINING_FIELDS if name in shipped and
               name != "progress")
    changed = PretrainConfig(out_dir="o", steps=2, warmup_steps=1, augment_shift=1, progress=False).train_config()
    assert changed == expected.replace(steps=2, warmup_steps=1, augment_shift=1, progress=False)
    with pytest.raises(ValueError, match=r"TrainConfig\.warmup_steps must be in \[0, steps=100\]"):
        PretrainConfig(out_dir="o", steps=100)
    with pytest.raises(ValueError, match=r"TrainConfig\.augment_shift must be an int >= 0"):
        PretrainConfig(out_dir="o", augment_shift=-1)


def test_pretrain_init_from_copies_a_policy_of_the_same_shape_and_refuses_another():
    """--init-from starts from a policy's weights (the run keeps its own action statistics); a policy of
    another shape is refused with the differing config fields named."""
    import torch

    import robosteer
    from robosteer.app.pretrain import _load_initial_weights
    from robosteer.models.default import default_config
    from robosteer.models.loading import build_vla_from_config

    start = robosteer.load_vla("default")
    stats = {"robosteer_sim": start.config.norm_stats["robosteer_sim"]}
    cfg, tok = default_config(stats)
    cfg = cfg.replace(**PretrainConfig(out_dir="o").model_changes())  # the recipe's shape: the shipped policy's
    vla = build_vla_from_config(cfg, tokenizer=tok, seed=7)
    assert not torch.equal(vla.state_dict()["projector.fc1.weight"], start.state_dict()["projector.fc1.weight"])
    _load_initial_weights(vla, "default")
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in vla.state_dict().items())
    other = build_vla_from_config(cfg.replace(n_views=1), tokenizer=tok, seed=7)
    with pytest.raises(ValueError, match=r"init_from='default'.*differs from this run's in \['n_views'\]"):
        _load_initial_weights(other, "default")


@pytest.mark.parametrize("verbose", [False, True])
def test_entry_points_log_info_but_hold_pyopengls_accelerate_line_unless_verbose(verbose):
    code = ("import logging\nfrom robosteer.cli import configure_logging\n"
            f"configure_logging(verbose={verbose})\n"
            "logging.getLogger('OpenGL.acceleratesupport').info('No OpenGL_accelerate module loaded')\n"
            "logging.getLogger('robosteer.sim.collect').info('collected 2 episodes')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "INFO robosteer.sim.collect: collected 2 episodes" in err
    assert ("OpenGL_accelerate" in err) == verbose
