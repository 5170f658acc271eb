"""Each stage's settings: one frozen dataclass, and the command-line options made from it.

A stage's settings are one frozen dataclass (`PrepareConfig`, the model's `DialogueNeRFConfig`
with the loop's `TrainConfig`, `RenderConfig`, `EvaluateConfig`): it checks its own ranges
(raising `SettingError`), a notebook or script builds it by keyword, the command line builds it
from options, and the stage writes it beside what it produced (`"settings"` in
prepare_report.json, CLIP.json and CLIP.eval.json; `"model"` and `"train"` in train_report.json).

A field the command line offers is declared with `option(default, help)`; its option is the
field's name with dashes (`--voice-print`), or `flag` where the command line has a shorter name.
Every option's parser default is None, so the dataclass holds the only default and `--help`
prints it.
"""

from __future__ import annotations

import argparse
import dataclasses

from minitalk.utils import SettingError

SIDE_PIXELS = (16, 2048)  # the side of a person's square, prepared or rendered: lowest, highest


def check_side(size: int) -> None:
    """A person's square side in pixels, as `PrepareConfig` and `RenderConfig` take it."""
    lo, hi = SIDE_PIXELS
    if not lo <= size <= hi:
        raise SettingError("size", f"a whole number of pixels from {lo} to {hi}", size)


def option(default, help: str, *, flag: str | None = None, const=None, **argparse_kwargs):
    """A dataclass field offered as a command-line option. `const`: the option takes no value and
    sets the field to it (`--no-deformation` sets `deformation` to False). Other keywords
    (`type`, `choices`, `metavar`) go to argparse; `type` defaults to the default's type."""
    meta = {"help": help, "flag": flag, "const": const, "argparse": argparse_kwargs}
    return dataclasses.field(default=default, metadata={"option": meta})


def _options(config_cls) -> list[tuple[dataclasses.Field, dict]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(config_cls) if "option" in f.metadata]


def flag_of(config_cls, name: str) -> str:
    """The command-line option of field `name` (`--` and the name with dashes, unless renamed)."""
    for f, meta in _options(config_cls):
        if f.name == name and meta["flag"]:
            return meta["flag"]
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, config_cls, exclusive: tuple[str, ...] = ()) -> None:
    """One option per `option` field of `config_cls`, its help ending with the default; the fields
    named in `exclusive` go into a group of which at most one may be given."""
    group = parser.add_mutually_exclusive_group() if exclusive else None
    for f, meta in _options(config_cls):
        kwargs = dict(meta["argparse"], dest=f.name, default=None)
        text = meta["help"]
        if meta["const"] is not None:
            kwargs.update(action="store_const", const=meta["const"])
        else:
            kwargs.setdefault("type", type(f.default) if f.default is not None else str)
            if f.default is not None:
                text += f" (default: {f.default})"
        target = group if f.name in exclusive else parser
        target.add_argument(flag_of(config_cls, f.name), help=text, **kwargs)


def from_options(config_cls, args: argparse.Namespace, error=None):
    """`config_cls` built from the options given in `args` (`add_options`); the rest keep their
    defaults. A setting out of range raises `SettingError`, or with `error` (argparse's
    `parser.error`, which exits with status 2) becomes `error("argument --flag: must be ...")`."""
    given = {f.name: getattr(args, f.name) for f, _ in _options(config_cls)}
    try:
        return config_cls(**{name: value for name, value in given.items() if value is not None})
    except SettingError as err:
        if error is None:
            raise
        error(f"argument {flag_of(config_cls, err.name)}: must be {err.expected}, got {err.got}")


def as_record(config) -> dict:
    """A config as JSON-ready values (paths and devices as text), for the reports it is saved in."""

    def plain(value):
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return str(value)

    return {name: plain(value) for name, value in dataclasses.asdict(config).items()}
