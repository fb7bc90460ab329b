"""Command-line flags generated from the settings' dataclasses, so that each setting has one
declaration, one default and one doc: the :class:`gradbench.profiles.Profile` fields (one flag
group per experiment, from its ``Config``) and the run options
(:class:`gradbench.api.RunOptions`)."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from gradbench.experiments.registry import experiments
from gradbench.profiles import settable, setting_default, setting_doc


def flag(name: str) -> str:
    """``variance_draws`` → ``--variance-draws``."""
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    """A default as a flag would take it."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def add_profile_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """A flag per settable profile field, grouped by the experiment that reads it (the rest:
    "run settings"), each defaulting to None (the profile's value) and taking the value as
    ``--set`` does; returns flag destination → field name."""
    groups: dict[str, list[str]] = {}
    owned: set[str] = set()
    for name, experiment in experiments().items():
        mine = [s for s in experiment.settings() if s not in owned]
        owned.update(mine)
        if mine:
            groups[f"{name} settings ({experiment.summary})"] = mine
    rest = [name for name in settable() if name not in owned]
    destinations: dict[str, str] = {}
    for title, names in {"run settings": rest, **groups}.items():
        group = parser.add_argument_group(title)
        for name in names:
            group.add_argument(
                flag(name), metavar="VALUE", dest=f"setting_{name}",
                help=f"{setting_doc(name)} (paper: {_shown(setting_default(name))})")
            destinations[f"setting_{name}"] = name
    return destinations


def add_option_flags(
    parser: argparse.ArgumentParser, options: type, skip: tuple[str, ...] = ()
) -> dict[str, str]:
    """A flag per field of the ``options`` dataclass (booleans as switches), defaulting to
    None (the dataclass' default); returns flag destination → field name."""
    hints = typing.get_type_hints(options)
    destinations: dict[str, str] = {}
    for spec in fields(options):
        if spec.name in skip:
            continue
        dest = f"option_{spec.name}"
        default = spec.default if spec.default is not MISSING else None
        doc = spec.metadata["doc"]
        if default not in (None, ()) and "default" not in doc:
            doc += f" (default: {_shown(default)})"
        if hints[spec.name] is bool:
            parser.add_argument(flag(spec.name), action="store_const", const=True, dest=dest,
                                help=spec.metadata["doc"])
        else:
            kind = int if hints[spec.name] in (int, int | None) else str
            parser.add_argument(flag(spec.name), type=kind, dest=dest, help=doc,
                                metavar=spec.name.upper())
        destinations[dest] = spec.name
    return destinations


def given(args: argparse.Namespace, destinations: dict[str, str]) -> dict[str, Any]:
    """The generated flags given on the command line, by field name."""
    return {name: getattr(args, dest) for dest, name in destinations.items()
            if getattr(args, dest) is not None}
