"""Each stage's settings: one frozen dataclass, the command-line options made from it, and what a
run saves of it (`minitalk.settings`)."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from minitalk.cli import main
from minitalk.dialogue.render import RenderConfig
from minitalk.evaluate.clip import EvaluateConfig
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.nerf.train import TrainConfig
from minitalk.prepare.data import PrepareConfig
from minitalk.settings import add_options, as_record, flag_of, from_options
from minitalk.utils import SettingError

CONFIGS = (PrepareConfig, TrainConfig, DialogueNeRFConfig, RenderConfig, EvaluateConfig)
COMMAND = {PrepareConfig: "prepare", TrainConfig: "train", DialogueNeRFConfig: "train",
           RenderConfig: "render", EvaluateConfig: "evaluate"}  # fmt: skip


def offered(config_cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_cls) if "option" in f.metadata]


def parser_for(config_cls) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_options(parser, config_cls)
    return parser


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_no_options_give_the_defaults_and_a_config_is_frozen(config_cls):
    cfg = from_options(config_cls, parser_for(config_cls).parse_args([]))
    assert cfg == config_cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.__setattr__(offered(config_cls)[0].name, None)


def test_an_option_sets_its_field_and_a_switch_sets_its_constant():
    args = parser_for(DialogueNeRFConfig).parse_args(["--torso-lag", "0.25", "--no-deformation",
                                                      "--no-expression-planes"])  # fmt: skip
    cfg = from_options(DialogueNeRFConfig, args)
    assert (cfg.torso_lag_s, cfg.deformation, cfg.expression_planes) == (0.25, False, 0)
    assert cfg.region_attention == DialogueNeRFConfig.region_attention  # not given: the default
    cfg = from_options(RenderConfig, parser_for(RenderConfig).parse_args(["--size", "64", "--seed", "3"]))
    assert (cfg.size, cfg.seed, cfg.roles) == (64, 3, None)


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_help_lists_every_option_with_its_default(config_cls, capsys):
    with pytest.raises(SystemExit):
        main([COMMAND[config_cls], "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in offered(config_cls):
        assert flag_of(config_cls, f.name) in text
        meta = f.metadata["option"]
        if meta["const"] is None and f.default is not None:
            assert f"(default: {f.default})" in text, f.name


def test_a_setting_out_of_range_names_its_option():
    errors = []
    for config_cls, argv in ((RenderConfig, ["--size", "8"]), (DialogueNeRFConfig, ["--torso-lag", "-1"]),
                             (EvaluateConfig, ["--reference", "a.mp4", "--prepared", "p"])):  # fmt: skip
        parser = argparse.ArgumentParser()
        add_options(parser, config_cls)  # not exclusive here: the config itself refuses both
        assert from_options(config_cls, parser.parse_args(argv), errors.append) is None
    assert errors[0] == "argument --size: must be a whole number of pixels from 16 to 2048, got 8"
    assert errors[1].startswith("argument --torso-lag: must be 0 or more seconds")
    assert errors[2].startswith("argument --prepared:")
    with pytest.raises(SettingError):  # without an error callback the error is raised
        from_options(RenderConfig, parser_for(RenderConfig).parse_args(["--size", "8"]))


def test_a_record_is_plain_json():
    record = as_record(TrainConfig(held_out_at=(1, 2)))
    assert record["held_out_at"] == [1.0, 2.0] and record["minutes"] is None
    assert as_record(EvaluateConfig(prepared=Path("p")))["prepared"] == "p"
