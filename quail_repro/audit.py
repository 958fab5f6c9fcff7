"""Does an unlearned checkpoint keep its forgetting under quantization? One command for a release gate.

    python -m quail_repro.audit --original PATH --unlearned PATH --data DIR_OR_DATASET \\
        [--quant rtn_int8,bnb_nf4,gguf_q4_0] [--max-recovery 0.2] [--retrain PATH] [--out DIR]

For each precision: MUSE's metrics of both models, the recovery ratio of the unlearned model
(what quantization gave back of what unlearning removed), its bucket overlap and update transfer
against the original. A thin entry point over the pipeline's own stage functions (stages.evaluate_all,
stages.analyse, recovery.row_recovery), on a config composed as
``+audit=default`` (conf/audit/default.yaml holds every default), so every number is cached and
computed exactly as in a table row. Exit status: 0 every gated ratio within --max-recovery, 1 some
ratio above it, 2 the audit could not run or some precision could not be evaluated.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from pathlib import Path

# offline unless asked otherwise, as python -m quail_repro
if os.environ.get("QUAIL_ONLINE") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hydra.errors import HydraException  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from quail_repro import numerics, stages  # noqa: E402
from quail_repro.compose import compose_config  # noqa: E402
from quail_repro.errors import ConfigError, DataError, QuailError  # noqa: E402
from quail_repro.eval.muse_eval import corpus_notes  # noqa: E402
from quail_repro.models.base import ModelRef, resolve_dtype  # noqa: E402
from quail_repro.recovery import row_recovery  # noqa: E402
from quail_repro.report.render import render_markdown  # noqa: E402
from quail_repro.report.table import Table  # noqa: E402
from quail_repro.results import METRICS, RECOVERY_METRICS, Results, write_json  # noqa: E402
from quail_repro.validate import check_config, resolve_device  # noqa: E402

log = logging.getLogger("quail_repro.audit")
PASS, FAIL, ERROR = 0, 1, 2
LABELS = {"verbmem_f": "VerbMem-f", "knowmem_f": "KnowMem-f", "knowmem_r": "KnowMem-r", "privleak": "PrivLeak"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m quail_repro.audit", description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, help="the model before unlearning: a local folder or a hub id")
    p.add_argument("--unlearned", required=True, help="the unlearned model: a local folder or a hub id")
    p.add_argument("--data", required=True,
                   help="a local folder in MUSE's layout, or a dataset option (muse_news, mini_news, ...)")
    # no defaults here: conf/audit/default.yaml holds them; a flag given overrides its value
    p.add_argument("--quant", help="comma-separated conf/quant options (full precision is always added)")
    p.add_argument("--max-recovery", type=float, help="the largest recovery ratio that passes")
    p.add_argument("--retrain", help="a model trained without the forget set, for PrivLeak's reference AUC")
    p.add_argument("--out", help="folder for audit.md and audit.json")
    p.add_argument("overrides", nargs="*", help="further Hydra overrides (eval.batch_size=4, device=cpu, ...)")
    return p.parse_args(argv)


def compose(args: argparse.Namespace) -> DictConfig:
    """conf/config.yaml + conf/audit/default.yaml with the flags as Hydra overrides."""
    data = Path(args.data).expanduser()
    overrides = ["+audit=default"]
    if data.is_dir():
        overrides += ["dataset=muse_dir", f"dataset.path={_quoted(str(data.resolve()))}"]
    else:
        overrides += [f"dataset={args.data}"]
    if args.quant:
        names = [q.strip() for q in args.quant.split(",") if q.strip() and q.strip() != "none"]
        overrides.append(f"quant=[{','.join(['none', *names])}]")
    for flag, key in ((args.max_recovery, "max_recovery"), (args.retrain, "retrain"), (args.out, "out")):
        if flag is not None:
            overrides.append(f"audit.{key}={_quoted(str(flag)) if isinstance(flag, str) else flag}")
    return compose_config(overrides + list(args.overrides))


def _quoted(s: str) -> str:
    if "'" in s:
        raise ConfigError(f"a path with a single quote cannot be passed as a Hydra override: {s!r}")
    return f"'{s}'"


def checkpoint(path_or_id: str) -> ModelRef:
    """A local folder keyed by its content (a re-saved model at the same path is re-evaluated), or a hub id."""
    folder = Path(path_or_id).expanduser()
    if not folder.exists():
        return ModelRef(path=path_or_id, key=path_or_id, tokenizer=path_or_id)
    if not (folder / "config.json").is_file():
        raise DataError(f"{path_or_id!r} is not a Hugging Face checkpoint (no config.json)")
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(folder)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                digest.update(chunk)
    path = str(folder.resolve())
    return ModelRef(path=path, key=f"checkpoint-{digest.hexdigest()[:16]}", tokenizer=path)


def audit(cfg: DictConfig, original: str, unlearned: str) -> dict:
    """The audit's findings (audit.json): per precision both models' metrics, the recovery ratios,
    bucket overlap, transfer coefficient, and the verdict against audit.max_recovery."""
    numerics.apply(cfg.numerics, resolve_device(cfg.device))  # before any kernel (numerics.py)
    cfg, parts = check_config(cfg)
    a = cfg.audit
    unknown = sorted(set(a.gate) - set(RECOVERY_METRICS))
    if unknown:
        raise ConfigError(f"audit.gate: {unknown} have no recovery ratio; choose from {list(RECOVERY_METRICS)}")
    r = stages.Run(cfg, numerics.open_cache(cfg), parts)
    data = r.data = stages.prepare_data(r)
    if data.classification:
        raise ConfigError(f"the audit measures MUSE's metrics; dataset={cfg.dataset.name} is a classification task")
    refs = {"original": checkpoint(original), "unlearned": checkpoint(unlearned)}
    retrain = checkpoint(a.retrain) if a.retrain else None
    r.models = stages.Models(target=refs["original"], retrain=retrain, dtype=resolve_dtype(a.dtype))
    auc = r.auc_retrain = stages.reference_auc(r) if retrain or data.auc_retrain is not None else None
    precisions = list(cfg.quant)
    runs = {role: Results(model=ref.key, dataset=cfg.dataset.name, method=role, seed=cfg.seed)
            for role, ref in refs.items()}  # collects each precision's metrics or failure
    evals = {role: stages.evaluate_all(r, ref, precisions, with_utility=True) for role, ref in refs.items()}
    for role, found in evals.items():
        stages.record(runs[role], found)
    ratios, _ = row_recovery(evals["unlearned"], evals["original"], precisions, RECOVERY_METRICS)
    rows = {}
    for q in precisions:
        row = {role: runs[role].metrics[q].to_dict() for role in refs}
        errors = [f"{role}: {m['error']}" for role, m in row.items() if m.get("status") == "failed"]
        if q != "none":
            row["recovery"] = ratios[q]
            row["exceeds"] = [k for k in a.gate if ratios[q][k] is not None and ratios[q][k] > a.max_recovery]
            if not errors and cfg.analysis.enabled:  # analysis.enabled=false skips two model loads per precision
                try:
                    stats = stages.analyse(r, refs["unlearned"], q).stats
                    row.update(bucket_overlap=stats["bucket_overlap"], transfer_coef=stats["transfer_coef"])
                except QuailError as err:  # e.g. a quantizer without codes: noted, not a verdict
                    row["analysis_error"] = str(err)
        if errors:
            row["errors"] = errors
        rows[q] = row
    failed = any(r.get("exceeds") for r in rows.values())
    incomplete = any(r.get("errors") for r in rows.values())
    return {"original": refs["original"].path, "unlearned": refs["unlearned"].path, "dataset": cfg.dataset.name,
            "data": cfg.dataset.get("path"), "max_recovery": a.max_recovery, "gate": list(a.gate),
            "privleak_auc_retrain": auc, "verdict": "fail" if failed else "incomplete" if incomplete else "pass",
            "notes": corpus_notes(data.corpus), "precisions": rows}


def table(report: dict) -> Table:
    """The findings as one row per precision and model, then the ratios, overlap and verdict."""
    gate = report["gate"]
    columns = [("", "precision"), ("", "model")] + [("", LABELS[k]) for k in METRICS] + \
              [("recovery", LABELS[k]) for k in RECOVERY_METRICS] + [("", "bucket overlap"), ("", "transfer"),
                                                                      ("", "verdict")]
    formats = ["text", "text"] + ["num"] * len(METRICS) + ["ratio"] * len(RECOVERY_METRICS) + ["ratio"] * 2 + ["text"]
    t = Table(name="audit", title=f"{Path(report['unlearned']).name} against {Path(report['original']).name} on "
                                  f"{report['dataset']}, max recovery {report['max_recovery']}",
              columns=columns, formats=formats)
    for q, row in report["precisions"].items():
        for role in ("original", "unlearned"):
            m = row[role]
            cells = [q, role] + [m.get(k) for k in METRICS]
            if role == "unlearned" and q != "none":
                verdict = ("error" if row.get("errors") else
                           f"above {report['max_recovery']}: {', '.join(LABELS[k] for k in row['exceeds'])}"
                           if row["exceeds"] else "ok")
                cells += [row["recovery"][k] for k in RECOVERY_METRICS] + \
                         [row.get("bucket_overlap"), row.get("transfer_coef"), verdict]
            else:
                cells += [None] * (len(RECOVERY_METRICS) + 3)
            t.rows.append(cells)
    t.notes.append(f"verdict: {report['verdict']} (gated on the recovery ratio of {', '.join(LABELS[k] for k in gate)})")
    t.notes += [f"{q}: {e}" for q, row in report["precisions"].items() for e in row.get("errors", [])]
    t.notes += [f"{q}: no bucket analysis ({row['analysis_error']})" for q, row in report["precisions"].items()
                if "analysis_error" in row]
    t.notes += [f"{k}: {v}" for k, v in report["notes"].items()]
    if report["privleak_auc_retrain"] is None:
        t.notes.append("PrivLeak needs a reference AUC (--retrain PATH, or a dataset with a published one): "
                       "not computed")
    t.notes.append("recovery ratio: (unlearned at q - unlearned at full) / (original at q - unlearned at full); "
                   "— where undefined (the denominator is not positive, or unlearning removed less than one "
                   "item's worth at full precision)")
    return t


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    import transformers  # its per-load progress bars are noise in a report

    transformers.utils.logging.disable_progress_bar()
    try:
        cfg = compose(args)
        report = audit(cfg, args.original, args.unlearned)
    except (QuailError, HydraException) as err:  # e.g. an unknown dataset or quantizer name
        print(f"audit: {type(err).__name__}: {err}", file=sys.stderr)
        return ERROR
    out = Path(cfg.audit.out)
    out.mkdir(parents=True, exist_ok=True)
    text = render_markdown(table(report))
    (out / "audit.md").write_text(text)
    write_json(out / "audit.json", report)
    print(text)
    print(f"written: {out / 'audit.md'}, {out / 'audit.json'}")
    return {"pass": PASS, "fail": FAIL, "incomplete": ERROR}[report["verdict"]]


if __name__ == "__main__":
    sys.exit(main())
