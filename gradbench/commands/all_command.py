"""``gradbench all``: every measurement for every applicable model × estimator × seed, then the
report; a thin layer over :func:`gradbench.api.run`.

Its flags are generated from the settings' declarations (:mod:`gradbench.commands.flags`): one
per profile field, grouped by experiment, and one per run option; ``--set KEY=VALUE`` sets the
same fields.
"""

from __future__ import annotations

import argparse

from gradbench import api
from gradbench.commands.common import key_values
from gradbench.commands.flags import add_option_flags, add_profile_flags, given
from gradbench.profiles import PROFILES, default_profile_name, parse_setting


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "all",
        help="run every measurement for every applicable model × estimator, then write reports",
        description="Run every experiment for every applicable model × estimator × seed of a "
        "profile (resumable) on every core, then write its report into reports/<profile>/. "
        "Profiles: " + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values()) + ".",
    )
    parser.add_argument(
        "--profile",
        help=f"one of {', '.join(PROFILES)} (default: paper with CUDA, else quick)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override any profile setting, e.g. train_epochs=3 or variance_batch_sizes=1,10,100",
    )
    parser.add_argument(
        "--model-arg", action="append", metavar="MODEL:KEY=VALUE",
        help="model option, e.g. MODEL:latent_dim=10",
    )
    parser.add_argument(
        "--estimator-arg", action="append", metavar="ESTIMATOR:KEY=VALUE",
        help="estimator option, e.g. gumbel-softmax:temperature=0.5",
    )
    options = add_option_flags(parser, api.RunOptions, skip=("progress", "verbose", "report"))
    settings = add_profile_flags(parser)
    parser.set_defaults(run=run, option_flags=options, setting_flags=settings)


def run(args: argparse.Namespace) -> int:
    settings = key_values(args.set, "--set")
    for key, value in settings.items():
        parse_setting(key, value)
    overrides = {**settings, **given(args, args.setting_flags), **given(args, args.option_flags)}
    try:
        result = api.run(
            args.profile or default_profile_name(),
            model_args=key_values(args.model_arg, "--model-arg"),
            estimator_args=key_values(args.estimator_arg, "--estimator-arg"),
            progress=not args.quiet,
            **overrides,
        )
    except KeyboardInterrupt:
        return 130
    return result.status
