"""``gradbench device-check``: the smoke profile on a device (CUDA by default) against the CPU.

Runs ``all --profile smoke`` twice at the same seeds, on the reference device (the CPU) and on
the device checked, each into its own results folder under ``--results``, then compares the
rows (:mod:`gradbench.device_check`): statistics within their intervals, timings side by side
(each synchronised on its device), the checked device's peak memory per experiment. Every
argument is checked first, with or without CUDA (bad ones exit 2 with one line); then without
CUDA it says so and exits 0 (nothing to check). Exit 1 when the devices disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from gradbench import api, device_check
from gradbench.commands.common import choose, seeds
from gradbench.device import DEVICES, resolve_device
from gradbench.estimators import make_estimator, split_labels
from gradbench.experiments.registry import selectable
from gradbench.models import MODELS
from gradbench.results import ResultStore


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "device-check",
        help="run the smoke profile on a GPU and on the CPU at the same seed and compare the rows",
    )
    parser.add_argument("--device", default="cuda", help="device checked (cuda)")
    parser.add_argument("--reference", default="cpu", help="reference device (cpu)")
    parser.add_argument("--results", default="results-device-check",
                        help="folder of both runs' results (resumable)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (0)")
    for flag in ("--models", "--estimators", "--experiments"):
        parser.add_argument(flag, help=f"passed to `all` ({flag[2:]} to run; default: all)")
    parser.add_argument("--data-dir", help="folder holding the dataset files")
    parser.set_defaults(run=run)


def _run_smoke(args: argparse.Namespace, device: str, folder: Path) -> int:
    """The smoke profile on ``device`` into ``folder`` (one process, so that timings compare);
    the run's exit status."""
    chosen = {name: getattr(args, name) for name in ("models", "estimators", "experiments",
                                                     "data_dir") if getattr(args, name)}
    result = api.run("smoke", device=device, seeds=args.seeds, executor=api.IN_PROCESS,
                     progress=False, results=str(folder / "results"),
                     out=str(folder / "reports"), **chosen)
    return result.status


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError (one line, exit 2) for a bad argument, before anything runs: the devices'
    names, the seeds, and every model, estimator and experiment named."""
    for device in (args.device, args.reference):
        choose(device, [d for d in DEVICES if d != "auto"], "device")
    seeds(args)
    for model in (m.strip() for m in (args.models or "").split(",") if m.strip()):
        choose(model, list(MODELS), "model")
    for label in split_labels(args.estimators) if args.estimators else []:
        make_estimator(label)
    for name in (e.strip() for e in (args.experiments or "").split(",") if e.strip()):
        choose(name, selectable(), "experiment")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    checked = args.device
    if checked.startswith("cuda") and resolve_device("auto").type != "cuda":
        print("gradbench device-check: skipped: no CUDA device here (torch.cuda.is_available() "
              "is False); run it on a machine with a GPU")
        return 0
    root = Path(args.results)
    folders = {"reference": root / args.reference, "checked": root / f"checked-{checked}"}
    for role, device in (("reference", args.reference), ("checked", checked)):
        status = _run_smoke(args, device, folders[role])
        if status:
            return status
    reference = ResultStore(folders["reference"] / "results").load()
    other = ResultStore(folders["checked"] / "results").load()
    statistics = device_check.compare(reference, other)
    summary = device_check.agreement_summary(statistics)
    timings = device_check.timing_ratios(reference, other)
    statistics.to_csv(root / "statistics.csv", index=False)
    timings.to_csv(root / "timings.csv", index=False)
    print(f"Statistics, {checked} against {args.reference} (intervals overlap):")
    print(tabulate(summary, headers="keys", tablefmt="github", showindex=False))
    disagreeing = statistics[~statistics["agrees"]]
    if not disagreeing.empty:
        print(f"\nRows that disagree ({len(disagreeing)}):")
        print(tabulate(disagreeing.head(20), headers="keys", tablefmt="github", showindex=False))
    print(f"\nTimings ({args.reference} / {checked}, each device synchronised): median speed-up "
          f"{timings['speed_up'].median():.2f}x over {len(timings)} rows")
    print(f"\nPeak memory on {checked} per experiment and model (MiB):")
    print(tabulate(device_check.peak_memory(other), headers="keys", tablefmt="github",
                   showindex=False, floatfmt=".1f"))
    print(f"\nRows in {root}/statistics.csv and {root}/timings.csv.")
    return 0 if device_check.passes(statistics) else 1
