"""Command-line arguments generated from a frozen config dataclass: one source for flags, types, defaults and help.

Each field of the dataclass becomes one flag; the command line never restates a default.

- the flag is the field name with dashes (``batch_size`` -> ``--batch-size``), after an optional
  ``prefix`` (``prefix="lora"``: ``r`` -> ``--lora-r``), or the name given in ``flags``;
- the type comes from the annotation: ``int``, ``float``, ``str``; ``X | None`` (for non-strings the
  word ``none`` gives None); ``tuple[X, X]`` takes that many values (``--betas 0.9 0.95``);
  ``tuple[X, ...]`` takes one comma-separated value (``--towers llm,dino``);
- a ``bool`` field is a switch that flips its default: ``--x`` when the default is False,
  ``--no-x`` when it is True (or the flag named in ``flags``, e.g. ``keyframes_only`` -> ``--all-frames``);
- the help text and the allowed values come from the field's metadata,
  ``field(default=..., metadata={"help": "...", "choices": REGISTRY, "metavar": ...})``, or from
  ``helps`` / ``choices`` given here; a field without a default is a required flag.

Only the standard library is imported, so a ``register(subparsers)`` that uses this stays cheap.

Usage::

    TRAIN_ARGUMENTS = ConfigArguments(TrainConfig, flags={"out_dir": "--out"}, required=("steps",))
    TRAIN_ARGUMENTS.add_to(parser)                      # in register(subparsers)
    config = TRAIN_ARGUMENTS.build(args, unnorm_key=k)  # in the command: a validated TrainConfig
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

NONE_WORD = "none"  # typed for an optional number: the field becomes None (e.g. --grad-clip none)


@dataclass(frozen=True)
class FieldType:
    """How one field reads from the command line: the element type, how many values, whether None is allowed."""

    kind: type  # int, float, str or bool
    optional: bool = False  # annotated ``X | None``
    count: int | None = None  # tuple[X, X]: number of values
    listed: bool = False  # tuple[X, ...]: one comma-separated value


def field_type(annotation: Any, name: str) -> FieldType:
    """``field_type(int | None, "grad_clip")`` -> ``FieldType(int, optional=True)``; TypeError when unsupported."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise TypeError(f"field {name!r}: a command-line flag needs one type or 'X | None', got {annotation}")
        optional, annotation = True, rest[0]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return FieldType(_scalar(args[0], name), optional, listed=True)
        if args and len(set(args)) == 1:
            return FieldType(_scalar(args[0], name), optional, count=len(args))
        raise TypeError(f"field {name!r}: tuples must be tuple[X, ...] or tuple[X, X, ...], got {annotation}")
    kind = _scalar(annotation, name)
    if kind is bool and optional:
        raise TypeError(f"field {name!r}: 'bool | None' has no switch form")
    return FieldType(kind, optional)


def _scalar(annotation: Any, name: str) -> type:
    if annotation in (int, float, str, bool):
        return annotation
    raise TypeError(f"field {name!r}: a command-line flag needs int, float, str or bool, got {annotation}")


def _converter(t: FieldType, choices: Sequence[Any] | None) -> Callable[[str], Any]:
    """The argparse ``type`` of a field: parses one command-line word (a comma list for ``tuple[X, ...]``)."""

    def one(text: str) -> Any:
        if t.optional and t.kind is not str and text.lower() == NONE_WORD:
            return None
        return t.kind(text)

    if not t.listed:
        one.__name__ = t.kind.__name__  # argparse names it in "invalid int value: 'x'"
        return one

    def listed(text: str) -> tuple:
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            values = tuple(t.kind(item) for item in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {t.kind.__name__} values, got {text!r}")
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid choice {bad[0]!r} in {text!r} (choose from "
                                             f"{', '.join(map(str, choices))})")
        return values

    listed.__name__ = f"comma-separated {t.kind.__name__} list"
    return listed


def _shown(t: FieldType, value: Any) -> str:
    """A default as a person types it: ``("llm", "dino")`` -> ``llm,dino``, ``(0.9, 0.999)`` -> ``0.9 0.999``."""
    if t.listed:
        return ",".join(map(str, value))
    return " ".join(map(str, value)) if t.count is not None else str(value)


@dataclass(frozen=True)
class ConfigArguments:
    """The flags of one config dataclass: ``add_to(parser)`` declares them, ``build(args)`` makes the config."""

    cls: type
    only: tuple[str, ...] | None = None  # these fields only (default: every field not in exclude)
    exclude: tuple[str, ...] = ()  # fields the command sets itself (pass them to build)
    prefix: str = ""  # flag prefix: "lora" gives --lora-r for field r
    flags: Mapping[str, str] = field(default_factory=dict)  # field -> flag, e.g. {"out_dir": "--out"}
    helps: Mapping[str, str] = field(default_factory=dict)  # field -> help, where the command's wording differs
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # field -> allowed values
    required: tuple[str, ...] = ()  # fields that must be given although the dataclass has a default

    def __post_init__(self) -> None:
        if not (dataclasses.is_dataclass(self.cls) and isinstance(self.cls, type)):
            raise TypeError(f"ConfigArguments needs a dataclass type, got {self.cls!r}")
        known = {f.name for f in dataclasses.fields(self.cls)}
        named = {"only": self.only or (), "exclude": self.exclude, "flags": self.flags, "helps": self.helps,
                 "choices": self.choices, "required": self.required}
        for what, names in named.items():
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"ConfigArguments.{what} names no field of {self.cls.__name__}: {unknown}; "
                                 f"fields: {', '.join(sorted(known))}")
        for name, flag in self.flags.items():
            if not flag.startswith("--"):
                raise ValueError(f"ConfigArguments.flags[{name!r}] must start with '--', got {flag!r}")

    def fields(self) -> list[dataclasses.Field]:
        """The dataclass fields that get a flag, in declaration order."""
        return [f for f in dataclasses.fields(self.cls) if f.name not in self.exclude
                and (self.only is None or f.name in self.only)]

    def flag(self, name: str) -> str:
        """The flag of field ``name`` (for a True-default switch: the ``--no-`` form)."""
        if name in self.flags:
            return self.flags[name]
        stem = "-".join(p for p in (self.prefix, name.replace("_", "-")) if p)
        f = next(f for f in dataclasses.fields(self.cls) if f.name == name)
        switch_off = field_type(self._hints()[name], name).kind is bool and f.default is True
        return f"--no-{stem}" if switch_off else f"--{stem}"

    def dest(self, name: str) -> str:
        """The ``argparse.Namespace`` attribute holding field ``name``."""
        flag = self.flag(name)
        if name not in self.flags and flag.startswith("--no-"):
            flag = "--" + flag[len("--no-"):]
        return flag[2:].replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str) -> None:
        """Declare one flag per field on ``parser`` (a parser or an argument group); with ``names``, only those
        fields, in that order (to interleave them with other flags)."""
        hints = self._hints()
        chosen = {f.name: f for f in self.fields()}
        unknown = [n for n in names if n not in chosen]
        if unknown:
            raise ValueError(f"ConfigArguments.add_to: {unknown} are not among the flags of {self.cls.__name__}: "
                             f"{', '.join(chosen)}")
        for f in [chosen[n] for n in names] if names else chosen.values():
            t = field_type(hints[f.name], f.name)
            default = _default(f)
            help_text = self.helps.get(f.name, f.metadata.get("help"))
            choices = self.choices.get(f.name, f.metadata.get("choices"))
            kwargs: dict[str, Any] = {"dest": self.dest(f.name)}
            if t.kind is bool:
                if default is dataclasses.MISSING or f.name in self.required:
                    raise TypeError(f"field {f.name!r}: a bool flag needs a default")
                kwargs["action"] = "store_false" if default else "store_true"
                if default and help_text and f.name not in self.helps:
                    help_text = f"turn off: {help_text}"
                parser.add_argument(self.flag(f.name), help=_escape(help_text), **kwargs)
                continue
            kwargs["type"] = _converter(t, choices)
            if t.count is not None:
                kwargs["nargs"] = t.count
            if choices is not None and not t.listed:
                kwargs["choices"] = tuple(choices)
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            notes = []
            if t.listed:
                among = f" from {','.join(map(str, choices))}" if choices is not None else ""
                notes.append("comma-separated" + among)
            if default is dataclasses.MISSING or f.name in self.required:
                kwargs["required"] = True
            else:
                kwargs["default"] = default
                if default is not None:
                    every = t.listed and choices is not None and tuple(default) == tuple(choices)
                    notes.append("default: all" if every else f"default: {_shown(t, default)}")
            if notes:
                help_text = f"{help_text} ({'; '.join(notes)})" if help_text else "; ".join(notes)
            parser.add_argument(self.flag(f.name), help=_escape(help_text), **kwargs)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields' values in ``args`` (tuples as tuples), by field name."""
        out = {}
        for f in self.fields():
            value = getattr(args, self.dest(f.name))
            out[f.name] = tuple(value) if isinstance(value, list) else value
        return out

    def build(self, args: argparse.Namespace, **changes: Any) -> Any:
        """The config from parsed ``args``; ``changes`` set the excluded fields (or override parsed ones)."""
        return self.cls(**{**self.values(args), **changes})

    def _hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.cls)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _escape(text: str | None) -> str | None:
    """Help text for argparse, which reads ``%`` as a format character."""
    return None if text is None else text.replace("%", "%%")


def field_default(cls: type, name: str) -> Any:
    """``field_default(TrainConfig, "batch_size")`` -> 16: a dataclass field's default, read where it is declared."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            value = _default(f)
            if value is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}.{name} has no default")
            return value
    raise ValueError(f"{cls.__name__} has no field {name!r}")
