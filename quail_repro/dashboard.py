"""A W&B report for one sweep, built with wandb-workspaces:

    python -m quail_repro.dashboard SWEEP_DIR [--entity E] [--project P]

The report shows the sweep's table (the W&B Table its report run logged), its figure, the
analysis figures of each job, and M2 (KnowMem forget) per precision for every run of the
sweep's group. Saving needs an API key, a network and WANDB_MODE=online, and the sweep's runs
uploaded first (`wandb sync`); otherwise the report is built and not saved, and it says why.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from quail_repro.loggers import sweep_group
from quail_repro.report import build, collect, precision_labels, report_settings
from quail_repro.results import MUSE_METRICS


def build_report(sweep_dir: str | Path, entity: str | None = None, project: str | None = None):
    """The wandb_workspaces Report object for the sweep in ``sweep_dir`` (not saved)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    sweep_dir = Path(sweep_dir)
    sweep = collect(sweep_dir)
    sweep_cfg = sweep.config
    settings = report_settings(sweep_cfg)
    name = settings["name"]
    logger = sweep_cfg.get("logger") or {}
    group = OmegaConf.select(sweep_cfg, "logger.group") or sweep_group(name, sweep_dir)
    project = project or logger.get("project") or os.environ.get("WANDB_PROJECT", "quail_repro")
    entity = entity or os.environ.get("WANDB_ENTITY") or OmegaConf.select(sweep_cfg, "logger.entity") or _default_entity()
    runs = wr.Runset(entity=entity, project=project, name=group, filters=[expr.Metric("Group") == group])
    table_md = (sweep_dir / f"{name}.md")
    labels = precision_labels(sweep.jobs, sweep_cfg)
    m2 = next(f"{m.paper} {m.what} {m.better}" for m in MUSE_METRICS if m.key == "knowmem_f")
    blocks = [
        wr.H1(f"{name}: {settings['title']}" if settings["title"] else name),
        wr.P(f"Claim tested: {settings['claim']}" if settings["claim"] else f"Sweep {sweep_dir}"),
        wr.PanelGrid(runsets=[runs], panels=[
            wr.WeavePanelSummaryTable(table_name=name, layout=wr.Layout(w=24, h=12)),
            wr.MediaBrowser(title="table figure", media_keys=[f"{name}/figure"], layout=wr.Layout(w=12, h=8)),
            wr.MediaBrowser(title="bucket overlap per layer", media_keys=["analysis/bucket_overlap_per_layer"],
                            layout=wr.Layout(w=12, h=8)),
            wr.MediaBrowser(title="|dw| / step", media_keys=["analysis/dw_over_step_hist"], layout=wr.Layout(w=12, h=8)),
            *[wr.BarPlot(title=f"{m2} at {label}", metrics=[f"eval/{q}/knowmem_f"], layout=wr.Layout(w=8, h=6))
              for q, label in labels.items()],
        ]),
        wr.H2("The table as written to the sweep folder"),
        wr.MarkdownBlock(text=table_md.read_text() if table_md.exists() else build(sweep_dir, figures=False).text),
    ]
    return wr.Report(project=project, entity=entity, title=f"quail_repro {name} ({sweep_dir.name})"[:128],
                     description=f"Runs of W&B group {group}; sweep folder {sweep_dir}", blocks=blocks)


def _default_entity() -> str:
    """The API's default entity when logged in; a placeholder otherwise (the report is then not saved)."""
    try:
        import wandb

        return wandb.Api().default_entity or "unknown-entity"
    except Exception:
        return "unknown-entity"


def why_not_saved() -> str | None:
    """None when the report can be saved; otherwise the reason."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode != "online":
        return f"WANDB_MODE={mode} (the harness defaults to offline); set WANDB_MODE=online to save"
    try:
        import wandb

        if not wandb.Api().api_key:
            return "no W&B API key (wandb login, or WANDB_API_KEY)"
    except Exception as err:
        return f"no W&B API access ({err})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quail_repro.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (the one with multirun.yaml)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: WANDB_ENTITY, logger.entity, the API's)")
    parser.add_argument("--project", default=None, help="W&B project (default: the sweep's logger.project)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.sweep_dir, args.entity, args.project)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"built report {report.title!r}: {len(report.blocks)} blocks, project {report.project}, "
          f"entity {report.entity}")
    reason = why_not_saved()
    if reason:
        print(f"not saved: {reason}. Upload the runs first with `wandb sync`, then rerun this command online.")
        return 0
    report.save()
    print(f"saved: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
