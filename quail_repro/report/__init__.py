"""A sweep's finished runs as one table: NAME.md, NAME.csv, NAME.tex and NAME.png in the sweep folder.

    python -m quail_repro.report SWEEP_DIR [--wandb]

Runs by itself at the end of every sweep (TableCallback, registered in conf/config.yaml), and
keeps the files current after each job, so a sweep stopped half way still has its table.
Nothing is recomputed: the table is read from the run folders' results.json files
(quail_repro.results).

* Rows: one per job of the sweep's grid, named by the values of the swept keys (the grid is
  expanded from the sweep folder's multirun.yaml the way Hydra's basic sweeper does it), in
  the sweep's order. A job without results says so ("missing", "unfinished"); a job that
  diverged or failed shows its status and no numbers, and so does a QUAIL job whose hinge
  never acted ("= base": its model is its base method's).
* Seeds: when ``seed`` is one of the swept keys, a row holds the jobs that differ only in
  their seed, and a numeric cell is the mean ± sample sd over the seeds with a value, with n
  and the seeds without one (``42.0 ± 2.8 (n=2, 1 failed)``); the CSV has mean, sd and n
  columns; a recovery ratio adds a 95% bootstrap interval over seeds and questions
  (quail_repro.stats).
* Columns: ``report.layout`` (set by the experiment config):
  - ``muse``: the four MUSE metrics M1-M4 at each precision of ``quant`` (full, 8-bit, 4-bit ...);
  - ``buckets``: the bucket analysis (|dw| statistics, bucket overlap) per quantizer;
  - ``recovery``: recovery ratios beside the bucket statistics that might explain them;
  - ``scale``: recovery, M2/M4, fraction of weights changed, transfer and the zero code's share
    of the update, by width, storage and lr (+experiment=scale_search), and recovery against width;
  - ``classification``: accuracy on forget / retain / test, macro-F1, membership-inference AUC
    (+experiment=table4, the Twitter-misinformation task) at each precision, acc-forget recovery below.
* Published numbers (conf/published/*.yaml) stand beside ours, with the difference, only
  for the same model, data and MUSE evaluation settings; otherwise they are listed apart as
  not comparable.

Modules: sweep (grid, jobs, rows), cells (a cell as text), table (the table, shared row
parts), muse / buckets / recovery / scale / classification (layouts), published, render (md, csv, tex), figures,
build, tracker, callback, cli.
"""
from quail_repro.report.build import Report, build, report_settings
from quail_repro.report.callback import TableCallback
from quail_repro.report.cli import main
from quail_repro.report.render import render_csv, render_latex, render_markdown
from quail_repro.report.sweep import Job, Sweep, collect, expand_grid, precision_labels
from quail_repro.report.table import Table
from quail_repro.report.tracker import log_to_tracker

__all__ = ["Job", "Report", "Sweep", "Table", "TableCallback", "build", "collect", "expand_grid", "log_to_tracker",
           "main", "precision_labels", "render_csv", "render_latex", "render_markdown", "report_settings"]
