"""``python -m quail_repro.report SWEEP_DIR [--wandb]``: rebuild a sweep's table from its run folders."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from quail_repro.report.build import build
from quail_repro.report.tracker import log_to_tracker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quail_repro.report",
                                     description="A sweep's finished runs as one table: NAME.md, NAME.csv, "
                                                 "NAME.tex and NAME.png in the sweep folder.")
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (the one with multirun.yaml)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table to the sweep's W&B group (with the sweep's logger settings)")
    args = parser.parse_args(argv)
    try:
        rep = build(args.sweep_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(rep.text)
    print("written: " + ", ".join(str(f) for f in rep.files))
    if args.wandb:
        sweep_cfg = OmegaConf.load(args.sweep_dir / "multirun.yaml")
        print(log_to_tracker(rep, args.sweep_dir, sweep_cfg.logger))
    return 0
