"""A toy-size sweep writes its table at the end; the report command rebuilds it from the run folders."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from quail_repro import report
from quail_repro.compose import compose_config
from quail_repro.report import Job, build
from quail_repro.report.figures import recovery_scatter
from quail_repro.report.render import tex_escape
from quail_repro.results import PrecisionMetrics, Results

ROOT = Path(__file__).resolve().parent.parent
HEAD = ["full M1↓", "full M2↓", "full M3→0", "full M4↑", "4-bit M1↓", "4-bit M2↓", "4-bit M3→0", "4-bit M4↑"]


def toy_sweep(tmp: Path, *overrides: str) -> tuple[Path, str]:
    """`python -m quail_repro +experiment=[table2,toy] ...` in a fresh process; the sweep folder and its output."""
    sweep = tmp / "sweep"
    env = dict(os.environ, QUAIL_CACHE_DIR=str(tmp / "cache"))
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[table2,toy]", "device=cpu",
                           "quant=[none,rtn_int4]", f"hydra.sweep.dir={sweep}", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep, proc.stdout


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    # three jobs: the target row, an unlearned row, and a quail row that fails (its auto margin
    # names a quantizer that does not exist; ++ adds the key to the other methods, which ignore it)
    return toy_sweep(tmp_path_factory.mktemp("toy_sweep"), "method=target,ga_gdr,quail", "logger=none",
                     "++method.auto_margin.quantizer=no_such_quant")


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_sweep_end_writes_the_table_files(sweep):
    sweep_dir, stdout = sweep
    for ext in ("md", "csv", "tex", "png"):
        assert (sweep_dir / f"table2.{ext}").stat().st_size > 100
    assert "## table2" in stdout and "| target" in stdout  # printed to the terminal
    rows = read_csv(sweep_dir / "table2.csv")
    assert rows[0] == ["method", "status", *HEAD]
    assert [r[0] for r in rows[1:]] == ["target", "ga_gdr", "quail"]
    for row in rows[1:3]:
        assert row[1] == "ok"
        rouge = [row[i] for i, h in enumerate(rows[0]) if h.split()[-1][:2] in ("M1", "M2", "M4")]
        assert len(rouge) == 6 and all(0 <= float(v) <= 100 for v in rouge)  # ROUGE-L x100
    tex = (sweep_dir / "table2.tex").read_text()
    assert r"\multicolumn{4}{c}{full}" in tex and r"M1$\downarrow$" in tex


def test_a_failed_job_shows_as_failed_never_as_numbers(sweep):
    sweep_dir, _ = sweep
    quail = read_csv(sweep_dir / "table2.csv")[3]
    assert quail[:2] == ["quail", "failed: ConfigError"]
    assert quail[2:] == [""] * len(HEAD)
    md = (sweep_dir / "table2.md").read_text()
    assert "quail failed: ConfigError: quantizer 'no_such_quant' not found" in md
    assert json.loads((sweep_dir / "2_quail" / "results.json").read_text())["status"] == "failed"


def test_recovery_ratios_stand_under_the_table_for_unlearned_rows(sweep):
    sweep_dir, _ = sweep
    md = (sweep_dir / "table2.md").read_text()
    assert "Recovery ratio" in md and "M2 recovery" in md
    recovery = json.loads((sweep_dir / "1_ga_gdr" / "results.json").read_text())["recovery"]["rtn_int4"]
    section = md[md.index("Recovery ratio"):md.index("Unlearning steps")]
    rows = [line for line in section.splitlines() if line.startswith("| ga_gdr")]
    assert len(rows) == 1  # the target row is not unlearned: no recovery row
    expected = [f"{v:.2f}" if v is not None else "undefined" for v in (recovery["knowmem_f"], recovery["verbmem_f"])]
    assert [c.strip() for c in rows[0].strip("|").split("|")][1:] == expected


def test_published_numbers_are_not_comparable_on_the_embedded_default(sweep):
    md = (sweep[0] / "table2.md").read_text()
    assert "NOT comparable" in md and "tiny_llama on mini_news" in md
    assert "published" not in "".join(r[1] for r in read_csv(sweep[0] / "table2.csv"))


def test_the_report_command_rebuilds_the_same_table(sweep, tmp_path):
    sweep_dir, _ = sweep
    copy = tmp_path / sweep_dir.name
    shutil.copytree(sweep_dir, copy)
    for ext in ("md", "csv", "tex", "png"):
        (copy / f"table2.{ext}").unlink()
    assert report.main([str(copy)]) == 0
    for ext in ("csv", "tex", "md"):  # the same but for the sweep folder the notes name
        before = (sweep_dir / f"table2.{ext}").read_text()
        for a, b in ((str(sweep_dir), str(copy)), (tex_escape(str(sweep_dir)), tex_escape(str(copy)))):
            before = before.replace(a, b)
        assert (copy / f"table2.{ext}").read_text() == before
    assert (copy / "table2.png").exists()


def test_a_stopped_sweep_reports_what_finished_and_what_is_missing(sweep, tmp_path):
    copy = tmp_path / "stopped"
    shutil.copytree(sweep[0], copy)
    (copy / "1_ga_gdr" / "results.json").unlink()  # stopped while running
    shutil.rmtree(copy / "2_quail")  # never started
    rep = build(copy)
    rows = read_csv(copy / "table2.csv")
    assert [r[:2] for r in rows[1:]] == [["target", "ok"], ["ga_gdr", "unfinished (no results.json)"],
                                         ["quail", "missing (not run)"]]
    assert "1 of 3 jobs finished; no results yet: ga_gdr (unfinished), quail (missing)" in rep.text


def test_a_diverged_job_shows_its_step(sweep, tmp_path):
    copy = tmp_path / "diverged"
    shutil.copytree(sweep[0], copy)
    path = copy / "1_ga_gdr" / "results.json"
    res = json.loads(path.read_text())
    res.update(status="diverged", metrics={}, unlearning={"status": "diverged", "step": 2, "loss": float("nan"),
                                                          "reason": "loss is not finite"})
    path.write_text(json.dumps(res))
    rep = build(copy)
    row = read_csv(copy / "table2.csv")[2]
    assert row[:2] == ["ga_gdr", "diverged at step 2"] and row[2:] == [""] * len(HEAD)
    assert "ga_gdr diverged at step 2: loss is not finite" in rep.text


def test_published_numbers_stand_beside_ours_for_the_same_model_and_data(sweep, tmp_path):
    copy = tmp_path / "muse"
    shutil.copytree(sweep[0], copy)
    muse_eval = compose_config(["eval=muse"]).eval  # composed: eval=muse has defaults (eval/utility)
    for job in ("0_target", "1_ga_gdr"):  # relabel the runs as the real MUSE setting
        cfg_path = copy / job / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(cfg_path)
        cfg.model.name, cfg.dataset.name, cfg.eval = "llama2_7b_muse_news", "muse_news", muse_eval
        OmegaConf.save(cfg, cfg_path)
    build(copy)
    rows = read_csv(copy / "table2.csv")
    labels = [r[1] for r in rows[1:]]
    assert labels[:3] == ["ok", "[1] Table 1 published", "Δ ours − published"]
    ours, published, delta = rows[1], rows[2], rows[3]
    assert published[2:6] == ["58.4", "63.9", "-99.8", "55.2"] and published[6:] == ["34.2", "54.4", "-99.8", "48.2"]
    assert float(delta[3]) == pytest.approx(float(ours[3]) - 63.9)
    assert labels[3:6] == ["ok", "[1] Table 1 published", "Δ ours − published"]  # ga_gdr has published rows too
    assert "NOT comparable" not in (copy / "table2.md").read_text()


def test_the_bucket_layout_has_one_row_per_quantizer(sweep, tmp_path):
    copy = tmp_path / "buckets"
    shutil.copytree(sweep[0], copy)
    mr = OmegaConf.load(copy / "multirun.yaml")
    mr.report.layout = "buckets"
    OmegaConf.save(mr, copy / "multirun.yaml")
    build(copy)
    rows = read_csv(copy / "table2.csv")
    assert rows[0][:3] == ["method", "quantizer", "status"] and "bucket overlap (%)" in rows[0]
    assert [r[:3] for r in rows[1:]] == [["target", "", "no analysis (not unlearned)"], ["ga_gdr", "rtn_int4", "ok"],
                                         ["quail", "", "failed: ConfigError"]]
    overlap = float(rows[2][rows[0].index("bucket overlap (%)")])
    assert 0 <= overlap <= 100
    assert (copy / "table2.png").exists()


def test_not_a_sweep_folder_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no multirun.yaml" in capsys.readouterr().err


def test_the_recovery_search_runs_at_toy_size(tmp_path):
    sweep = tmp_path / "sweep"
    env = dict(os.environ, QUAIL_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[recovery_search,toy]", "device=cpu",
                           "logger=none", "+experiment/recovery_point=lr_1e-5,lr_1e-4", "quant=[none,rtn_int4]",
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_csv(sweep / "recovery_search.csv")
    assert rows[0][:4] == ["recovery_point", "status", "full M2↓", "full M4↑"]
    assert "4-bit M2 recovery" in rows[0] and "4-bit transfer coef." in rows[0]
    assert [r[:2] for r in rows[1:]] == [["lr_1e-5", "ok"], ["lr_1e-4", "ok"]]
    results = json.loads((sweep / "1_ga_gdr" / "results.json").read_text())
    coef = results["analysis"]["rtn_int4"]["transfer_coef"]
    cell = rows[2][rows[0].index("4-bit transfer coef.")]
    assert cell == "" if coef is None else float(cell) == pytest.approx(coef)


def test_the_recovery_figure_plots_recovery_against_step_ratio_and_transfer(tmp_path):
    def job(num, dw, coef, rec):
        results = Results(model="tiny_llama", dataset="mini_news", method="ga_gdr", seed=0, status="ok",
                          metrics={"none": PrecisionMetrics(), "rtn_int4": PrecisionMetrics()},
                          recovery={"rtn_int4": {"knowmem_f": rec, "verbmem_f": None}},
                          analysis={"rtn_int4": {"median_abs_dw": dw, "median_step": 0.01, "transfer_coef": coef}})
        config = OmegaConf.create({"quant": {"none": {"name": "none"}, "rtn_int4": {"name": "rtn_int4", "bits": 4}}})
        return Job(num=num, overrides=[], keys={"p": str(num)}, config=config, results=results)

    png = recovery_scatter([job(0, 1e-4, 1.0, 0.1), job(1, 1e-3, 0.9, None)], tmp_path / "r.png")
    assert png is not None and png.stat().st_size > 1000
    assert recovery_scatter([job(0, 1e-4, 1.0, None)], tmp_path / "none.png") is None  # nothing defined


# -- synthetic sweep folders: what Hydra and the pipeline leave, without running anything ----

QUANT = {"none": {"name": "none"}, "rtn_int4": {"name": "rtn_int4", "bits": 4, "group_size": 64}}
NEVER_STARTED = object()


def job_config(keys: dict[str, str]) -> dict:
    method = keys.get("method", "ga_gdr")
    method_cfg = {"name": method, "loss": {"_target_": "quail_repro.methods.ga.GA"},
                  "retain": {"_target_": "quail_repro.methods.regularizers.GDR", "alpha": 1.0}}
    if method.startswith("quail"):
        method_cfg["hinge"] = {"gamma": 1.0, "margin": "auto"}
    return {"seed": int(keys.get("seed", 0)), "model": {"name": "tiny_llama"}, "dataset": {"name": "mini_news"},
            "eval": {"batch_size": 8}, "method": method_cfg, "quant": QUANT}


def results_json(method: str, m2: dict[str, float], *, schema_version: int | None = 2, **fields) -> dict:
    """A finished run's results.json: M2 per precision as given, the other metrics fixed."""
    out = {"model": "tiny_llama", "dataset": "mini_news", "method": method, "seed": 0, "status": "ok",
           "metrics": {q: {"verbmem_f": 10.0, "knowmem_f": v, "knowmem_r": 50.0, "privleak": -20.0}
                       for q, v in m2.items()}, **fields}
    if schema_version is not None:
        out["schema_version"] = schema_version
    return out


def fake_sweep(sweep: Path, params: dict[str, str], results_of, layout: str = "muse", config_of=job_config) -> Path:
    """A sweep folder of ``params``' grid; ``results_of(keys)`` gives each job's results.json
    (None: started, no results.json yet; NEVER_STARTED: no run folder); ``config_of(keys)`` its config."""
    mr = OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": []}},
                           "report": {"name": "fake", "layout": layout, "published": []},
                           "method": {"name": "ga_gdr"}, "quant": QUANT, "logger": {"_target_": "x"}})
    sweep.mkdir(parents=True)
    OmegaConf.save(mr, sweep / "multirun.yaml")
    grid, _ = report.expand_grid(mr.hydra)
    for num, overrides in enumerate(grid):
        keys = dict(o.split("=", 1) for o in overrides)
        res = results_of(keys)
        if res is NEVER_STARTED:
            continue
        run = sweep / f"{num}_{keys.get('method', 'run')}"
        (run / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
        OmegaConf.save(OmegaConf.create(config_of(keys)), run / ".hydra" / "config.yaml")
        if res is not None:
            (run / "results.json").write_text(json.dumps(res))
    return sweep


def hinge_sweep(keys: dict[str, str]) -> dict:
    m2 = {"none": 20.0, "rtn_int4": 40.0}
    recovery = {"rtn_int4": {"knowmem_f": 0.5, "verbmem_f": None}}
    if keys["method"] == "quail":  # the hinge never acted: ga_gdr's model and numbers
        return results_json("quail", m2, recovery=recovery,
                            unlearning={"status": "ok", "steps": 3, "hinge_active_steps": 0})
    if keys["method"] == "quail_ga":  # written before the schema had a version or hinge activity
        return results_json("quail_ga", {"none": 15.0, "rtn_int4": 30.0}, schema_version=None,
                            recovery=recovery, unlearning={"status": "ok", "steps": 3})
    return results_json(keys["method"], m2, recovery=recovery, unlearning={"status": "ok", "steps": 3})


@pytest.mark.parametrize("layout", ["muse", "recovery"])
def test_a_quail_run_whose_hinge_never_acted_shows_no_numbers_of_its_own(tmp_path, layout):
    sweep = fake_sweep(tmp_path / "sweep", {"method": "ga_gdr,quail,quail_ga"}, hinge_sweep, layout)
    rep = build(sweep, figures=False)
    rows = read_csv(sweep / "fake.csv")
    status = rows[0].index("status")
    m2 = rows[0].index("full M2↓")
    assert [r[status] for r in rows[1:]] == ["ok", "= base (hinge inactive)", "ok"]
    assert [r[m2] for r in rows[1:]] == ["20.0", "", "15.0"]  # an old results.json shows its numbers
    assert all(c == "" for c in rows[2][status + 1:])
    assert "quail: QUAIL's hinge was never active (0 of 3 steps)" in rep.text and "the ga_gdr row has them" in rep.text
    if layout == "muse":
        section = rep.text[rep.text.index("Recovery ratio"):]
        quail = next(line for line in section.splitlines() if line.startswith("| quail "))
        assert [c.strip() for c in quail.strip("|").split("|")][1:] == ["= base (hinge inactive)"] * 2
        # every unlearned row's steps, and a QUAIL row's active hinge steps, under the table
        steps = rep.table.extra[-1]
        assert steps.name == "fake_steps" and [r[0] for r in steps.rows] == ["ga_gdr", "quail", "quail_ga"]
        assert [r[1] for r in steps.rows] == [3.0, 3.0, 3.0] and steps.rows[1][3] == 0.0
        assert steps.rows[0][2] == "no stop set" and steps.rows[0][3] is None


def test_published_numbers_are_data_files_named_as_the_experiments_name_them():
    from quail_repro.report.published import load_published

    published = load_published()
    assert published["news"].rows[("ga_gdr", "4-bit")] == {"verbmem_f": 25.0, "knowmem_f": 50.1, "privleak": -99.1,
                                                          "knowmem_r": 47.7}
    assert (published["books"].model, published["books"].dataset) == ("llama2_7b_muse_books", "muse_books")
    for path in (ROOT / "conf" / "experiment").glob("*.yaml"):
        assert set(OmegaConf.select(OmegaConf.load(path), "report.published", default=[])) <= set(published), path.name


def failing_precision_sweep(keys: dict[str, str]) -> dict:
    """Every job's awq_int4 fails alike (a CPU); ga_gdr seed 1's rtn_int4 fails its own way."""
    out = results_json(keys["method"], {"none": 20.0, "rtn_int4": 30.0})
    out["metrics"]["awq_int4"] = {"status": "failed", "error": "QuantizerUnavailable: AWQ needs a GPU"}
    if keys == {"method": "ga_gdr", "seed": "1"}:
        out["metrics"]["rtn_int4"] = {"status": "failed", "error": "QuantizerUnavailable: out of memory"}
    return out


def test_a_precision_that_fails_in_every_job_is_one_note(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep", {"method": "target,ga_gdr", "seed": "0,1"}, failing_precision_sweep)
    notes = build(sweep, figures=False).table.notes
    failed = [n for n in notes if " failed in " in n]
    assert failed == ["awq_int4 failed in every job (4): QuantizerUnavailable: AWQ needs a GPU",
                      "rtn_int4 failed in ga_gdr seed=1: QuantizerUnavailable: out of memory"]


# -- seeds: rows are the other swept keys, cells are mean ± sd over seeds ------------------

M2_BY_SEED = {("target", "0"): 60.0, ("target", "1"): 62.0, ("target", "2"): 67.0,
              ("ga_gdr", "0"): 40.0, ("ga_gdr", "1"): 44.0}  # ga_gdr seed 2 fails
ITEMS_BY_SEED = {"0": {"full": [0.0, 0.0], "quant": [0.0, 1.0], "target_quant": [1.0, 1.0]},  # ratio 0.5
                 "1": {"full": [0.0, 0.0], "quant": [1.0, 1.0], "target_quant": [1.0, 1.0]}}  # ratio 1


def seeded_sweep(keys: dict[str, str]) -> dict:
    method, seed = keys["method"], keys["seed"]
    if (method, seed) not in M2_BY_SEED:
        return {"model": "tiny_llama", "dataset": "mini_news", "method": method, "seed": int(seed),
                "status": "failed", "error": "ConfigError: no such thing", "schema_version": 2}
    m2 = M2_BY_SEED[method, seed]
    if method == "target":
        return results_json(method, {"none": m2, "rtn_int4": m2 - 10})
    items = ITEMS_BY_SEED[seed]
    ratio = (sum(items["quant"]) - sum(items["full"])) / (sum(items["target_quant"]) - sum(items["full"]))
    return results_json(method, {"none": m2, "rtn_int4": m2 + 5}, unlearning={"status": "ok", "steps": 3},
                        recovery={"rtn_int4": {"knowmem_f": ratio, "verbmem_f": None}},
                        recovery_items={"rtn_int4": {"knowmem_f": items}})


@pytest.fixture
def seeds(tmp_path):
    return fake_sweep(tmp_path / "seeds", {"method": "target,ga_gdr", "seed": "0,1,2"}, seeded_sweep)


def test_a_seed_sweep_has_a_row_per_method_with_mean_sd_and_n(seeds):
    rep = build(seeds)
    table = (seeds / "fake.md").read_text().split("\n- ")[0]  # the table, not the notes and tables below
    row = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
           for line in table.splitlines() if line.startswith(("| target", "| ga_gdr"))}
    head = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    m2 = head.index("full M2↓")
    assert row["target"][m2] == "63.0 ± 3.6 (n=3)"  # sd of 60, 62, 67: sqrt(26 / 2)
    assert row["ga_gdr"][m2] == "42.0 ± 2.8 (n=2, 1 failed)"  # sd of 40, 44: sqrt(8 / 1)
    assert row["ga_gdr"][head.index("status")] == "2× ok, 1× failed: ConfigError"
    assert "ga_gdr seed=2 failed: ConfigError: no such thing" in rep.text
    assert "Seeds with results per row: target 3 of 3, ga_gdr 2 of 3." in rep.text
    assert (seeds / "fake.png").exists() and (seeds / "fake.tex").read_text().count("± 2.8 (n=2, 1 failed)") == 2


def test_a_seed_sweep_csv_has_mean_sd_and_n_columns(seeds):
    build(seeds, figures=False)
    rows = read_csv(seeds / "fake.csv")
    assert rows[0][:5] == ["method", "status", "full M1↓ mean", "full M1↓ sd", "full M1↓ n"]
    assert len(rows[0]) == 2 + 8 * 3 and [r[0] for r in rows[1:]] == ["target", "ga_gdr"]
    col = {h: i for i, h in enumerate(rows[0])}
    ga = rows[2]
    assert (float(ga[col["full M2↓ mean"]]), ga[col["full M2↓ n"]]) == (42.0, "2")
    assert float(ga[col["full M2↓ sd"]]) == pytest.approx(8 ** 0.5)
    assert float(ga[col["4-bit M2↓ mean"]]) == 47.0


def test_a_seed_sweep_recovery_ratio_has_a_bootstrap_interval(seeds):
    from quail_repro.report.tracker import tracker_rows
    from quail_repro.recovery import recovery_interval

    rep = build(seeds, figures=False)
    low, high = recovery_interval([ITEMS_BY_SEED["0"], ITEMS_BY_SEED["1"]])
    ratios = next(x for x in rep.table.extra if x.name == "fake_recovery")
    assert [r[0] for r in ratios.rows] == ["ga_gdr"]
    # the pooled ratio (3/4 of the pooled gap came back), its interval, and the seeds' ratios beside them
    assert ratios.rows[0][1].text("ratio") == \
        f"0.75 (pooled; per seed 0.75 ± 0.35, n=2, 1 failed; 95% CI {low:.2f} to {high:.2f})"
    assert "95% CI" in rep.text
    # the W&B table holds each cell over seeds as its text
    assert tracker_rows(rep.table)[1][rep.table.headers.index("full M2↓")] == "42.0 ± 2.8 (n=2, 1 failed)"


def test_a_seed_sweep_in_the_recovery_layout(tmp_path):
    sweep = fake_sweep(tmp_path / "seeds", {"method": "target,ga_gdr", "seed": "0,1,2"}, seeded_sweep, "recovery")
    build(sweep, figures=False)
    rows = read_csv(sweep / "fake.csv")
    col = {h: i for i, h in enumerate(rows[0])}
    assert {"4-bit M2 recovery ci95 low", "4-bit M2 recovery ci95 high"} <= set(col)
    assert float(rows[2][col["4-bit M2 recovery mean"]]) == 0.75 and rows[2][col["4-bit M2 recovery n"]] == "2"
    assert float(rows[2][col["4-bit M2 recovery pooled"]]) == 0.75


# -- the scale layout: recovery by width, storage and lr -----------------------------------

SCALE = {"+experiment/scale_width": "w128,w256", "+experiment/scale_storage": "fp32,bf16",
         "method.lr": "1e-05,0.0001", "seed": "0,1"}


def scale_config(keys: dict[str, str]) -> dict:
    bf16 = keys["+experiment/scale_storage"] == "bf16"
    cfg = job_config({"seed": keys["seed"]})
    cfg["model"].update(dtype="float32", arch={"hidden_size": int(keys["+experiment/scale_width"][1:])},
                        train={"param_dtype": "bfloat16_emulated" if bf16 else "native"})
    cfg["method"].update(lr=float(keys["method.lr"]), param_dtype="bfloat16_emulated" if bf16 else "float32")
    return cfg


def scale_results(keys: dict[str, str]) -> dict:
    """Recovery 0.5 (seed 0) and 1 (seed 1) for bf16 at width 256 and lr 1e-5, nothing elsewhere."""
    recovering = (keys["+experiment/scale_storage"], keys["+experiment/scale_width"], keys["method.lr"]) == \
        ("bf16", "w256", "1e-05")
    items = ITEMS_BY_SEED[keys["seed"]] if recovering else {"full": [0.0, 0.0], "quant": [0.0, 0.0],
                                                             "target_quant": [1.0, 1.0]}
    ratio = (sum(items["quant"]) - sum(items["full"])) / (sum(items["target_quant"]) - sum(items["full"]))
    analysis = {"frac_changed": 0.2 if keys["+experiment/scale_storage"] == "bf16" else 1.0, "transfer_coef": 0.9,
                "by_code": {"zero": {"share_of_weights": 0.1, "share_of_update_norm": 0.4, "transfer_coef": 0.0},
                            "other": {"share_of_weights": 0.9, "share_of_update_norm": 0.6, "transfer_coef": 1.5}}}
    return analysed_results({"none": 20.0, "rtn_int4": 20.0 + 40 * ratio}, analysis, ratio, items)


def analysed_results(m2: dict[str, float], analysis: dict, ratio: float, items: dict) -> dict:
    """A GA_GDR run of 200 steps with its rtn_int4 bucket analysis, KnowMem-f recovery ratio and the
    per-question scores it came from."""
    return results_json("ga_gdr", m2, unlearning={"status": "ok", "steps": 200}, analysis={"rtn_int4": analysis},
                        recovery={"rtn_int4": {"knowmem_f": ratio, "verbmem_f": None}},
                        recovery_items={"rtn_int4": {"knowmem_f": items}})


def test_the_scale_layout_has_a_row_per_width_storage_and_lr_and_a_figure(tmp_path):
    from quail_repro.report.scale import storage
    from quail_repro.recovery import recovery_interval

    sweep = fake_sweep(tmp_path / "scale", SCALE, scale_results, "scale", scale_config)
    rep = build(sweep)
    rows = read_csv(sweep / "fake.csv")
    col = {h: i for i, h in enumerate(rows[0])}
    assert [r[:3] for r in rows[1:]] == [[w, s, lr] for w in ("w128", "w256") for s in ("fp32", "bf16")
                                         for lr in ("1e-05", "0.0001")]
    bf16_256 = rows[7]
    assert float(bf16_256[col["4-bit M2 recovery mean"]]) == 0.75 and bf16_256[col["4-bit M2 recovery n"]] == "2"
    low, high = recovery_interval([ITEMS_BY_SEED["0"], ITEMS_BY_SEED["1"]])
    assert float(bf16_256[col["4-bit M2 recovery ci95 low"]]) == pytest.approx(low)
    assert float(bf16_256[col["4-bit M2 recovery ci95 high"]]) == pytest.approx(high)
    assert [float(r[col["4-bit changed (%) mean"]]) for r in rows[1:]] == [100.0, 100.0, 20.0, 20.0] * 2
    assert float(bf16_256[col["4-bit zero code: share of Σ Δw² (%) mean"]]) == pytest.approx(40.0)
    assert float(bf16_256[col["4-bit M4 mean"]]) == 50.0 and float(bf16_256[col["full M2↓ mean"]]) == 20.0
    assert "zero code: share of the update's squared norm" in rep.text
    assert (sweep / "fake.png").stat().st_size > 1000  # recovery against width
    configs = [OmegaConf.create(scale_config(k)) for k in (
        {"+experiment/scale_width": "w128", "+experiment/scale_storage": s, "method.lr": "1e-05", "seed": "0"}
        for s in ("fp32", "bf16"))]
    assert [storage(c) for c in configs] == ["fp32", "bf16 (emulated)"]
    configs[0].method.param_dtype = "bfloat16_emulated"  # recovery_search's old bf16 points
    assert storage(configs[0]) == "fp32 target, bf16 (emulated) unlearning"
    configs[0].model.dtype, configs[0].method.param_dtype = "bfloat16", "native"  # the GPU path
    assert storage(configs[0]) == "bf16"


def test_a_rewritten_job_config_is_read_again_by_the_next_table_rebuild(tmp_path):
    # the per-job parse is memoised (the table is rebuilt after every job); a changed file is not stale
    from quail_repro.report.sweep import _load_yaml

    path = tmp_path / "config.yaml"
    OmegaConf.save(OmegaConf.create({"seed": 0}), path)
    assert _load_yaml(path).seed == 0
    OmegaConf.save(OmegaConf.create({"seed": 12}), path)
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse-grained clock
    assert _load_yaml(path).seed == 12


def test_a_seed_sweep_says_which_models_its_seeds_hold_fixed(tmp_path):
    def config(keys, train_seed):
        cfg = job_config(keys)
        cfg["model"]["train"] = {"seed": train_seed}
        cfg["dataset"]["generator"] = {"seed": 0}
        cfg["method"]["seed"] = int(keys["seed"])
        return cfg

    params = {"method": "ga_gdr", "seed": "0,1"}
    varied = fake_sweep(tmp_path / "varied", params, seeded_sweep, config_of=lambda k: config(k, int(k["seed"])))
    fixed = fake_sweep(tmp_path / "fixed", params, seeded_sweep, config_of=lambda k: config(k, 0))
    note = next(n for n in build(fixed, figures=False).table.notes if n.startswith("Over seeds"))
    assert "Held fixed across the seeds, deliberately: dataset.generator.seed=0 (the corpus); " \
           "model.train.seed=0 (target and retrain)." in note
    note = next(n for n in build(varied, figures=False).table.notes if n.startswith("Over seeds"))
    assert "dataset.generator.seed=0 (the corpus)." in note and "model.train.seed" not in note


LEVERAGE = {"+experiment/leverage_arch": "d4w128,d4w512,d16w128", "+experiment/leverage_knowledge": "converged",
            "seed": "0,1", "+experiment/leverage_update": "confined,unlearning"}
ARCH = {"d4w128": (4, 128), "d4w512": (4, 512), "d16w128": (16, 128)}


def leverage_config(keys: dict[str, str]) -> dict:
    cfg = job_config({"seed": keys["seed"]})
    depth, width = ARCH[keys["+experiment/leverage_arch"]]
    cfg["model"].update(arch={"num_hidden_layers": depth, "hidden_size": width})
    return cfg


def leverage_results(keys: dict[str, str]) -> dict:
    """A confined logit shift of exactly 0.01 x depth x sqrt(width) (seed 1: x1.1), an unlearning shift
    of 1 everywhere; ||dw|| 2 (confined) or 10; the target's KnowMem-f 80 (items 1, 0.6), the
    unlearned model's 40 (items 0.5, 0.3): half of it lost."""
    depth, width = ARCH[keys["+experiment/leverage_arch"]]
    confined = keys["+experiment/leverage_update"] == "confined"
    noise = 1.1 if keys["seed"] == "1" else 1.0
    shift = 0.01 * depth * width ** 0.5 * noise if confined else 1.0
    analysis = {"logit_shift_full": shift, "kl_full": shift / 100, "update_l2": 2.0 if confined else 10.0,
                "frac_changed": 0.1, "transfer_coef": 0.05,
                "by_code": {"zero": {"share_of_update_norm": 0.99}, "other": {"share_of_update_norm": 0.01}}}
    items = {"full": [0.5, 0.3], "quant": [0.5, 0.3], "target_quant": [1.0, 0.6], "target_full": [1.0, 0.6]}
    return analysed_results({"none": 40.0, "rtn_int4": 40.0}, analysis, 0.0, items)


def test_the_leverage_layout_fits_each_update_over_depth_and_width_and_extrapolates(tmp_path):
    from quail_repro.report.leverage import PowerLaw, fit_power_law, meeting_depth, meeting_width

    sweep = fake_sweep(tmp_path / "leverage", LEVERAGE, leverage_results, "leverage", leverage_config)
    rep = build(sweep)
    rows = read_csv(sweep / "fake.csv")
    col = {h: i for i, h in enumerate(rows[0])}
    assert [r[col["depth × width"]] for r in rows[1:]] == ["4 × 128"] * 2 + ["4 × 512"] * 2 + ["16 × 128"] * 2
    first = rows[1]  # d4w128 confined: shifts 0.01 x 4 x sqrt(128) x (1, 1.1)
    assert float(first[col["logit shift mean"]]) == pytest.approx(0.04 * 128 ** 0.5 * 1.05)
    assert float(first[col["shift / ‖Δw‖₂ mean"]]) == pytest.approx(0.02 * 128 ** 0.5 * 1.05)
    assert float(first[col["target M2 mean"]]) == pytest.approx(80.0)
    assert float(first[col["forget answers lost (%) mean"]]) == pytest.approx(50.0)
    assert float(first[col["4-bit zero code: share of Σ Δw² (%) mean"]]) == pytest.approx(99.0)
    # the fit: exponents 1 (depth) and 0.5 (width) for the confined shift, 0 for the unlearning one
    fit = rep.table.extra[0]
    by_quantity = {r[1]: r for r in fit.rows}
    assert by_quantity["confined shift"][3].startswith("1.00") and by_quantity["confined shift"][4].startswith("0.50")
    assert by_quantity["unlearning shift"][3].startswith("0.00")
    assert by_quantity["confined shift"][6] == pytest.approx(0.01 * 32 * 64 * 1.1 ** 0.5)  # geometric mean of seeds
    assert any("21 × that of an update that unlearns" in n for n in fit.notes)  # 20.48 x sqrt(1.1) = 21.48
    assert "21 × that of an update that unlearns" in (sweep / "fake.md").read_text()  # rendered under it
    assert any("depths 4-16 and widths 128-512 and extrapolated 2× in depth and 8× in width" in n for n in fit.notes)
    assert (sweep / "fake.png").stat().st_size > 1000
    # by hand: 0.01 x 32 x sqrt(w) = 1 at w = (1 / 0.32)^2
    confined = fit_power_law([(d, w, 0.01 * d * w ** 0.5) for d, w in ARCH.values()])
    assert (confined.b, confined.c) == (pytest.approx(1.0), pytest.approx(0.5)) and confined.se_b is None
    flat = PowerLaw(0.0, 0.0, 0.0, None, None, 3)
    assert meeting_width(confined, flat, 32) == pytest.approx((1 / 0.32) ** 2)
    assert meeting_width(flat, confined, 32) is None  # the ratio falls with width: never
    assert meeting_depth(confined, flat, 4096) == pytest.approx(1 / (0.01 * 64))  # 0.01 x d x 64 = 1
    assert meeting_depth(flat, confined, 4096) is None
    assert fit_power_law([(4, 128, 1.0), (4, 256, 2.0)]) is None  # one depth: no depth exponent


def test_a_shown_value_that_differs_between_seeds_lists_every_seeds_value():
    from types import SimpleNamespace

    from quail_repro.report.sweep import Row

    jobs = lambda *vs: [SimpleNamespace(get=lambda path, v=v: v) for v in vs]
    assert Row({}, jobs(11, 11, 8)).get("results.unlearning.hinge_active_steps") == "11 / 11 / 8"
    assert Row({}, jobs(0, 0, 0)).get("x") == 0  # one value the seeds share: shown once
    assert Row({}, jobs(None, 5)).get("x") == 5  # a seed without a value adds nothing


def test_the_table_is_rebuilt_after_a_job_at_most_every_refresh_seconds(tmp_path):
    """hydra.callbacks.table.refresh_seconds: a job that ends within it of the last rebuild leaves the
    table as it is; one that ends later (or with 0) rebuilds it with its results."""
    from quail_repro.report.callback import BUILT_MARK, TableCallback

    sweep = fake_sweep(tmp_path / "s", {"method": "ga,ga_gdr"},
                       lambda k: results_json(k["method"], {"none": 20.0, "rtn_int4": 40.0}) if k["method"] == "ga" else None)
    config = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "sweep": {"dir": str(sweep)}}})
    slow = TableCallback(refresh_seconds=3600)
    slow.on_job_end(config, None)  # no rebuild yet: it builds
    assert "1 of 2 jobs finished" in (sweep / "fake.md").read_text() and (sweep / BUILT_MARK).exists()
    (sweep / "1_ga_gdr" / "results.json").write_text(json.dumps(results_json("ga_gdr", {"none": 1.0, "rtn_int4": 2.0})))
    slow.on_job_end(config, None)  # rebuilt a moment ago: left alone
    assert "1 of 2 jobs finished" in (sweep / "fake.md").read_text()
    TableCallback(refresh_seconds=0).on_job_end(config, None)
    assert "2 of 2 jobs finished" in (sweep / "fake.md").read_text()
    old = (sweep / BUILT_MARK).stat().st_mtime - 7200
    os.utime(sweep / BUILT_MARK, (old, old))
    (sweep / "1_ga_gdr" / "results.json").unlink()
    slow.on_job_end(config, None)  # the last rebuild is older than refresh_seconds: rebuilt
    assert "1 of 2 jobs finished" in (sweep / "fake.md").read_text()
    with pytest.raises(ValueError, match="refresh_seconds"):
        TableCallback(refresh_seconds=-1)
