"""W&B offline: a toy sweep's run files hold the config, the metrics, the generations and the table.

The .wandb file is read back record by record (stack.md, "Weights & Biases offline"): a
7-byte header, then 32 KiB blocks of chunks (crc u32, length u16, type u8; FULL=1, FIRST=2,
MIDDLE=3, LAST=4), each record a wandb_internal_pb2.Record.
"""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from quail_repro.dashboard import build_report, why_not_saved
from quail_repro.loggers import NullLogger, WandbLogger, run_summary
from quail_repro.results import Results, Unlearning

ROOT = Path(__file__).resolve().parent.parent
BLOCK, HEADER = 32 * 1024, 7


def records(path: Path) -> list:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:  # zero padding up to the block's end
            pos += BLOCK - pos % BLOCK
            continue
        payload, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


class RunFile:
    """What one offline run logged: run record, config, history keys, summary, files, artifacts."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.config, self.history, self.summary, self.files, self.artifacts = {}, {}, {}, [], []
        self.exit_code = None
        for r in records(next(run_dir.glob("*.wandb"))):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                self.run = r.run
                self.config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "history":
                for item in r.history.item:
                    self.history.setdefault("/".join(item.nested_key) or item.key, []).append(json.loads(item.value_json))
            elif kind == "summary":
                for item in r.summary.update:
                    self.summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
            elif kind == "files":
                self.files += [f.path for f in r.files.files]
            elif kind == "artifact":
                self.artifacts.append(r.artifact)
            elif kind == "exit":
                self.exit_code = r.exit.exit_code

    def table(self, key: str) -> dict:
        """A logged wandb.Table, read from the run's media folder."""
        path = next(f for f in self.files if f.startswith(f"media/table/{key}_"))
        return json.loads((self.dir / "files" / path).read_text())


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    sweep = tmp / "sweep"
    env = dict(os.environ, QUAIL_CACHE_DIR=str(tmp / "cache"), WANDB_MODE="offline",
               **{v: str(tmp / "wandb") for v in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")})
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[table2,toy]", "device=cpu",
                           "method=target,ga_gdr", "quant=[none,rtn_int4]", f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [RunFile(d) for d in sorted((tmp / "wandb" / "wandb").glob("offline-run-*"))]
    return sweep, {r.run.job_type: r for r in runs}, proc.stdout + proc.stderr


def test_each_job_is_a_run_in_the_sweeps_group(wandb_sweep):
    sweep, runs, stdout = wandb_sweep
    assert sorted(runs) == ["ga_gdr", "report", "target"]
    assert {r.run.run_group for r in runs.values()} == {f"table2-{sweep.name}"}
    assert runs["ga_gdr"].run.display_name == "1_ga_gdr"
    assert "wandb sync" in stdout  # where the offline runs went and how to upload them


def test_the_run_holds_the_full_composed_config(wandb_sweep):
    ga = wandb_sweep[1]["ga_gdr"]
    assert ga.config["method"]["name"] == "ga_gdr" and ga.config["method"]["max_steps"] == 3
    assert ga.config["model"]["arch"]["hidden_size"] == 64
    assert list(ga.config["quant"]) == ["none", "rtn_int4"] and ga.config["quant"]["rtn_int4"]["group_size"] == 64
    assert ga.config["report"]["name"] == "table2"
    assert "method=ga_gdr" in ga.config["hydra"]["overrides"]


def test_metrics_per_stage_and_precision(wandb_sweep):
    ga = wandb_sweep[1]["ga_gdr"]
    results = json.loads((wandb_sweep[0] / "1_ga_gdr" / "results.json").read_text())
    for q in ("none", "rtn_int4"):
        for m in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"):
            assert ga.summary[f"eval/{q}/{m}"] == pytest.approx(results["metrics"][q][m])
    assert len(ga.history["unlearn/total"]) == 3  # one point per unlearning step
    assert ga.summary["analysis/rtn_int4/bucket_overlap"] == pytest.approx(results["analysis"]["rtn_int4"]["bucket_overlap"])
    assert ga.summary["status"] == "ok" and ga.exit_code == 0
    assert any(f.startswith("media/images/analysis/bucket_overlap_per_layer") for f in ga.files)


def test_generations_as_a_table(wandb_sweep):
    ga = wandb_sweep[1]["ga_gdr"]
    table = ga.table("generations")
    assert table["columns"] == ["precision", "metric", "item", "input", "reference", "output", "rougeL"]
    gens = json.loads((wandb_sweep[0] / "1_ga_gdr" / "generations" / "none.json").read_text())
    first = next(r for r in table["data"] if r[:3] == ["none", "knowmem_f", 0])
    assert first[3:] == [gens["knowmem_f"][0]["question"], gens["knowmem_f"][0]["answer"],
                         gens["knowmem_f"][0]["output"], gens["knowmem_f"][0]["rougeL"]]


def test_the_sweep_table_is_logged_as_a_table_and_an_artifact(wandb_sweep):
    sweep, runs, _ = wandb_sweep
    rep = runs["report"]
    table = rep.table("table2")
    csv_head = (sweep / "table2.csv").read_text().splitlines()[0].split(",")
    assert table["columns"] == csv_head
    assert [row[:2] for row in table["data"]] == [["target", "ok"], ["ga_gdr", "ok"]]
    artifact = next(a for a in rep.artifacts if a.type == "table")
    assert artifact.name == f"table2-{sweep.name}"
    assert sorted(c.path for c in artifact.manifest.contents) == ["table2.csv", "table2.md", "table2.png", "table2.tex"]


def test_the_sweeps_table_reaches_the_tracker_in_a_finished_report_run(wandb_sweep):
    sweep, runs, output = wandb_sweep
    rep = runs["report"]
    assert "could not log the table" not in output
    assert rep.summary["status"] == "ok" and rep.exit_code == 0  # closed by log_to_tracker, not at exit
    # the table in the run's summary, where W&B's table panels read it, one row per job
    assert rep.summary["table2/_type"] == "table-file" and rep.summary["table2/nrows"] == 2
    assert rep.table("table2")["data"] and "wandb sync" in output


def test_the_installed_packages_are_listed_once_per_sweep(wandb_sweep):
    """logger.save_requirements=per_sweep: the sweep's table run lists them, its jobs do not."""
    _, runs, _ = wandb_sweep
    assert (runs["report"].dir / "files" / "requirements.txt").exists()
    assert not (runs["ga_gdr"].dir / "files" / "requirements.txt").exists()
    assert not (runs["target"].dir / "files" / "requirements.txt").exists()


def test_finish_takes_a_summary_dict_under_every_logger():
    wandb_logger = WandbLogger(project="quail_test", entity=None, mode="offline", group=None, job_type=None,
                               run_name=None, tags=[], dir=None, run_id=None, resume="allow", osh_command_dir=None,
                               save_requirements="per_sweep")
    for logger in (NullLogger(), wandb_logger):
        with pytest.raises(TypeError, match="'status'"):
            logger.finish(Results("tiny_llama", "mini_news", "ga", 0, status="ok"))
        with pytest.raises(TypeError, match="'status'"):
            logger.finish({"error": "no status"})
        logger.finish({"status": "ok"})  # wandb: no run started, nothing to close
    failed = Results("tiny_llama", "mini_news", "ga", 0, status="failed", error="DataError: x",
                     unlearning=Unlearning(status="diverged", step=3))
    assert run_summary(failed) == {"status": "failed", "error": "DataError: x",
                                   "unlearning": {"status": "diverged", "step": 3}}
    assert run_summary(Results("tiny_llama", "mini_news", "ga", 0, status="ok")) == {"status": "ok"}
    where = {"cpu": "x", "cpu_capability": "AVX2", "torch_threads": 2, "torch": "2.13.0", "gpu": None}
    assert run_summary(Results("tiny_llama", "mini_news", "ga", 0, status="ok", machine=where))["machine"] == where


def test_dashboard_builds_the_report_offline_and_says_it_cannot_save(wandb_sweep, monkeypatch, capsys):
    import wandb_workspaces.reports.v2 as wr

    from quail_repro import dashboard

    monkeypatch.setenv("WANDB_MODE", "offline")
    report = build_report(wandb_sweep[0], entity="someone")
    grid = next(b for b in report.blocks if isinstance(b, wr.PanelGrid))
    assert any(isinstance(p, wr.WeavePanelSummaryTable) and p.table_name == "table2" for p in grid.panels)
    assert any(isinstance(p, wr.MediaBrowser) and p.media_keys == ["table2/figure"] for p in grid.panels)
    assert "WANDB_MODE=offline" in why_not_saved()
    assert dashboard.main([str(wandb_sweep[0]), "--entity", "someone"]) == 0
    assert "not saved" in capsys.readouterr().out


def test_logger_none_and_wandb_have_the_same_calls():
    calls = {"start", "log_metrics", "log_table", "log_images", "log_artifact", "finish", "sync_hint"}
    assert calls <= set(dir(NullLogger)) and calls <= set(dir(WandbLogger))
