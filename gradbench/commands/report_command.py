"""``gradbench report``: rebuild every report from stored results, recomputing nothing.

A damaged cell (:class:`gradbench.results.CellDamaged`: its digest or schema fails) stops it
with exit 2 naming the file, before any table is written: ``gradbench all`` sets it aside and
computes it again.

Reads the tidy rows of a result store and writes the same tables (byte for byte), figures, index
and references that ``gradbench all`` writes; see :mod:`gradbench.report.build`. Rows of several
seeds (cells that differ only in their seed) are aggregated over the seeds.
"""

from __future__ import annotations

import argparse

from gradbench.report import build_reports, check_writable
from gradbench.report.build import FIGURE_FORMATS, TABLE_FORMATS, check_formats
from gradbench.report.notes import seed_phrase
from gradbench.results import ResultStore


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild the reports from stored results without recomputing anything"
    )
    parser.add_argument("--results", default="results", help="results folder (results)")
    parser.add_argument("--out", default="reports", help="reports folder (reports)")
    parser.add_argument(
        "--profile",
        help="report the rows of this profile (default: the most recently run one)",
    )
    parser.add_argument(
        "--formats",
        default=",".join(TABLE_FORMATS + FIGURE_FORMATS),
        help=f"comma-separated ({','.join(TABLE_FORMATS + FIGURE_FORMATS)})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    formats = check_formats(f for f in args.formats.split(","))
    rows = ResultStore(args.results).load(refuse_damaged=True)
    if rows.empty:
        raise ValueError(
            f"no stored results in {args.results!r}; run `python -m gradbench all` first "
            "or pass --results DIR"
        )
    stored = sorted({str(p) for p in rows["profile"].dropna()})
    if args.profile is not None and args.profile not in stored:
        raise ValueError(
            f"no results of profile {args.profile!r} in {args.results!r}; "
            f"valid: {', '.join(stored)}"
        )
    check_writable(args.out)
    report = build_reports(rows, args.out, profile=args.profile, formats=formats)
    seeds = ", ".join(str(s) for s in report.seeds) or "none stored"
    print(
        f"gradbench report: {len(report.tables)} tables and {len(report.plots)} figures from "
        f"{len(rows)} stored rows ({seed_phrase(len(report.seeds))}: {seeds}) written to "
        f"{report.out}/ (index: {report.out / 'README.md'})"
    )
    return 0
