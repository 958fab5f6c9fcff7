"""The classification task: data sources and their label mapping, the forget selectors, the errors
that name file / column / value, the shared loss math on class logits, and a toy table4 sweep."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from quail_repro.build import from_config
from quail_repro.cache import Cache
from quail_repro.errors import ConfigError, DataError
from quail_repro.methods.base import Outputs
from quail_repro.methods.ga import GA
from quail_repro.methods.npo import NPO
from quail_repro.methods.regularizers import KLR
from quail_repro.results import SCHEMA_VERSION, PrecisionMetrics, Results
from quail_repro.validate import check_config

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
REAL_FAKE = "dataset.label_map={real: reliable, fake: misinformation}"


def cfg_of(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def corpus_of(tmp_path, *overrides):
    source = from_config(cfg_of(*overrides).dataset)
    path, _ = source.prepare(Cache(tmp_path / "cache"))
    return source.load(path)


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def posts(n: int, offset: int = 0) -> list[dict]:
    return [{"id": i, "tweet": f"post number {i} about claim {i % 3}", "label": ("real", "fake")[i % 2],
             "user": f"u{i % 4}"} for i in range(offset, offset + n)]


@pytest.fixture
def split_files(tmp_path):
    files = {s: write_csv(tmp_path / f"{s}.csv", posts(n, off)) for s, n, off in
             (("train", 20, 0), ("val", 4, 100), ("test", 6, 200))}
    return [f"dataset.files={{train: {files['train']}, val: {files['val']}, test: {files['test']}}}", REAL_FAKE]


# -- sources and label mapping ------------------------------------------------------------


def test_csv_columns_and_label_mapping(tmp_path, split_files):
    corpus = corpus_of(tmp_path, "dataset=tweets_csv", *split_files)
    assert corpus.labels == ["reliable", "misinformation"]
    train = corpus.split("train")
    assert [p["text"] for p in train] == [p["tweet"] for p in posts(20)]
    assert [p["label"] for p in train] == [{"real": 0, "fake": 1}[p["label"]] for p in posts(20)]
    assert len(corpus.split("val")) == 4 and len(corpus.split("test")) == 6
    assert len(corpus.split("forget")) + len(corpus.split("retain")) == 20
    assert corpus.split("retain1") == corpus.split("retain")  # the methods' retain split name


def test_json_file_other_columns_and_one_file_split_by_fraction(tmp_path):
    rows = [{"body": f"text {i}", "verdict": i % 2} for i in range(40)]
    (tmp_path / "all.json").write_text(json.dumps(rows))
    common = ["dataset=tweets_csv", f"dataset.file={tmp_path / 'all.json'}", "dataset.text_column=body",
              "dataset.label_column=verdict", "dataset.label_map={0: reliable, 1: misinformation}"]
    a = corpus_of(tmp_path / "a", *common)
    sizes = {s: len(a.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 28, "val": 4, "test": 8}
    texts = [p["text"] for s in ("train", "val", "test") for p in a.split(s)]
    assert sorted(texts) == sorted(r["body"] for r in rows)  # a partition of the file
    assert all(p["label"] == int(p["text"].split()[1]) % 2 for p in a.split("train"))
    again = corpus_of(tmp_path / "b", *common)
    other = corpus_of(tmp_path / "c", *common, "dataset.split_seed=1")
    assert again.split("test") == a.split("test") and other.split("test") != a.split("test")


def test_mini_tweets_claims_are_coherent_and_the_split_is_fixed(tmp_path):
    corpus = corpus_of(tmp_path, "dataset=mini_tweets")
    gen = cfg_of("dataset=mini_tweets").dataset.generator
    assert len(corpus.split("train")) == gen.n_claims * gen.posts_per_claim.train
    by_claim = {}
    for s in ("train", "val", "test"):
        for p in corpus.split(s):
            by_claim.setdefault(p["claim"], set()).add(p["label"])
    assert len(by_claim) == gen.n_claims and all(len(v) == 1 for v in by_claim.values())  # one label per claim
    assert {p["claim"] for p in corpus.split("forget")} == set(cfg_of("dataset=mini_tweets").dataset.forget["values"])


# -- forget selectors ---------------------------------------------------------------------


def test_forget_by_claim_takes_every_post_of_those_claims_and_nothing_else(tmp_path):
    corpus = corpus_of(tmp_path, "dataset=mini_tweets", "dataset.forget.values=[claim003,claim007]")
    assert {p["claim"] for p in corpus.split("forget")} == {"claim003", "claim007"}
    assert not {p["claim"] for p in corpus.split("retain")} & {"claim003", "claim007"}


def test_forget_by_keyword_indices_and_column(tmp_path, split_files):
    kw = corpus_of(tmp_path / "k", "dataset=tweets_csv", *split_files, "forget@dataset.forget=by_keyword",
                   "dataset.forget.keywords=[CLAIM 2]")
    assert kw.split("forget") and all("claim 2" in p["text"] for p in kw.split("forget"))
    assert not any("claim 2" in p["text"] for p in kw.split("retain"))
    idx = corpus_of(tmp_path / "i", "dataset=tweets_csv", *split_files, "forget@dataset.forget=by_indices",
                    "dataset.forget.indices=[1,5,5,19]")
    assert idx.forget == [1, 5, 19]
    user = corpus_of(tmp_path / "u", "dataset=tweets_csv", *split_files, "forget@dataset.forget=by_claim",
                     "dataset.forget.column=user", "dataset.forget.values=[u1]")
    assert {p["user"] for p in user.split("forget")} == {"u1"} and "u1" not in {p["user"] for p in user.split("retain")}


def test_forget_random_fraction_depends_on_its_seed_only(tmp_path, split_files):
    a = corpus_of(tmp_path / "a", "dataset=tweets_csv", *split_files, "dataset.forget.fraction=0.25")
    b = corpus_of(tmp_path / "b", "dataset=tweets_csv", *split_files, "dataset.forget.fraction=0.25", "seed=5")
    c = corpus_of(tmp_path / "c", "dataset=tweets_csv", *split_files, "dataset.forget.fraction=0.25",
                  "dataset.forget.seed=1")
    assert len(a.forget) == 5 and a.forget == b.forget and a.forget != c.forget


def test_label_flip_poisons_the_forget_set_and_keeps_the_true_labels(tmp_path, split_files):
    clean = corpus_of(tmp_path / "clean", "dataset=tweets_csv", *split_files)
    flip = corpus_of(tmp_path / "flip", "dataset=tweets_csv", *split_files, "forget@dataset.forget=label_flip",
                     "dataset.forget.fraction=0.2")
    assert len(flip.forget) == 4 and sorted(flip.poisoned) == flip.forget
    train, true = flip.split("train"), clean.split("train")
    for i in range(20):
        assert train[i]["label"] == (1 - true[i]["label"] if i in flip.poisoned else true[i]["label"])
    assert [p["label"] for p in flip.split("poison")] == [true[i]["label"] for i in flip.forget]
    assert not clean.poisoned


# -- errors -------------------------------------------------------------------------------


def test_missing_column_names_the_file_and_the_column(tmp_path, split_files):
    with pytest.raises(DataError, match=r"train\.csv: column 'text' not found"):
        corpus_of(tmp_path, "dataset=tweets_csv", *split_files, "dataset.text_column=text")


def test_unknown_label_names_the_file_the_column_and_the_value(tmp_path):
    rows = posts(10)
    rows[3]["label"] = "satire"
    files = {s: write_csv(tmp_path / f"{s}.csv", rows if s == "val" else posts(10)) for s in ("train", "val", "test")}
    with pytest.raises(DataError, match=r"val\.csv: column 'label' row 3 has label value 'satire'"):
        corpus_of(tmp_path, "dataset=tweets_csv", REAL_FAKE,
                  f"dataset.files={{train: {files['train']}, val: {files['val']}, test: {files['test']}}}")


def test_empty_file_and_empty_split(tmp_path, split_files):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        corpus_of(tmp_path / "a", "dataset=tweets_csv", REAL_FAKE, f"dataset.file={tmp_path / 'empty.csv'}")
    write_csv(tmp_path / "three.csv", posts(3))
    with pytest.raises(DataError, match=r"three\.csv: split 'val' is empty"):
        corpus_of(tmp_path / "b", "dataset=tweets_csv", REAL_FAKE, f"dataset.file={tmp_path / 'three.csv'}")
    with pytest.raises(DataError, match="selected no training post"):
        corpus_of(tmp_path / "c", "dataset=tweets_csv", *split_files, "forget@dataset.forget=by_keyword",
                  "dataset.forget.keywords=[nowhere]")


def test_files_or_file_and_a_hub_name_are_required(tmp_path):
    with pytest.raises(ConfigError, match="either dataset.files"):
        corpus_of(tmp_path, "dataset=tweets_csv")
    with pytest.raises(ConfigError, match="dataset.path"):
        corpus_of(tmp_path, "dataset=tweets_hub")


def test_a_classification_dataset_needs_a_classifier_and_its_eval():
    with pytest.raises(ConfigError, match="dataset=mini_tweets needs model=minilm_cls"):
        check_config(cfg_of("dataset=mini_tweets", "device=cpu"))
    with pytest.raises(ConfigError, match="dataset=mini_news needs a language model"):
        check_config(cfg_of("+experiment=classification", "dataset=mini_news", "device=cpu"))
    with pytest.raises(ConfigError, match="fraction=1.5"):
        check_config(cfg_of("+experiment=classification", "forget@dataset.forget=random", "dataset.forget.fraction=1.5",
                            "device=cpu"))


def test_the_hub_source_is_offline_and_says_which_dataset_failed(tmp_path):
    with pytest.raises(DataError, match="no-such/tweets split 'train'"):
        corpus_of(tmp_path, "dataset=tweets_hub", "dataset.path=no-such/tweets")


# -- one copy of each method's math, on class logits --------------------------------------


def test_methods_apply_their_loss_math_to_class_logits():
    torch.manual_seed(0)
    logits, ref, labels = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    cur, old = Outputs(logits[:, None], labels[:, None]), Outputs(ref[:, None], labels[:, None])
    assert torch.allclose(GA().forget_loss(cur, None), -F.cross_entropy(logits, labels))
    logp = -F.cross_entropy(logits, labels, reduction="none")
    ref_logp = -F.cross_entropy(ref, labels, reduction="none")
    npo = -(2 / 0.1) * F.logsigmoid(-0.1 * (logp - ref_logp)).mean()
    assert torch.allclose(NPO(beta=0.1).forget_loss(cur, old), npo)
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(ref, -1), log_target=True, reduction="batchmean")
    assert torch.allclose(KLR(GA(), alpha=1.0, kl_reduction="batchmean").retain_loss(cur, old), kl, atol=1e-6)


def test_results_schema_keeps_each_task_to_its_own_metrics():
    cls = PrecisionMetrics(acc_forget=50.0, acc_retain=90.0, acc_test=80.0, f1_forget=40.0, f1_retain=89.0,
                           f1_test=79.0, mia_auc=0.6)
    assert set(cls.to_dict()) == {"acc_forget", "acc_retain", "acc_test", "f1_forget", "f1_retain", "f1_test",
                                  "mia_auc"}
    muse = PrecisionMetrics(verbmem_f=1.0, knowmem_f=2.0, knowmem_r=3.0, privleak=4.0, privleak_auc=0.5)
    assert set(muse.to_dict()) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak_auc"}
    old = {"model": "m", "dataset": "d", "method": "ga", "seed": 0, "status": "ok", "schema_version": 2,
           "metrics": {"none": muse.to_dict()}}
    assert Results.from_dict(old).metric("none", "knowmem_f") == 2.0
    r = Results("minilm_cls", "mini_tweets", "ga", 0, status="ok", metrics={"none": cls})
    assert Results.from_dict(json.loads(json.dumps(r.to_dict()))).metric("none", "mia_auc") == 0.6


# -- a toy table4 sweep -------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_table4(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table4")
    sweep = tmp / "sweep"
    proc = subprocess.run([sys.executable, "-m", "quail_repro", "+experiment=[table4,toy_classification]", "device=cpu",
                           "method=target,retrain,ga,npo_klr,quail", "logger=none", f"paths.cache={tmp / 'cache'}",
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def results_of(sweep: Path, job: str) -> dict:
    return json.loads((sweep / job / "results.json").read_text())


def test_toy_table4_writes_its_table_and_classification_results(toy_table4):
    md = (toy_table4 / "table4.md").read_text()
    header, *rows = list(csv.reader((toy_table4 / "table4.csv").open()))
    assert [r[0] for r in rows] == ["target", "retrain", "ga", "npo_klr", "quail"]
    for precision in ("full", "8-bit", "4-bit"):
        assert any(h.startswith(precision) and "acc-f" in h for h in header)
    assert "acc-p" not in md  # no poisoning here
    assert "Recovery ratio of acc-forget" in md and "| ga " in md[md.index("Recovery ratio of acc-forget"):]
    ga = results_of(toy_table4, "2_ga")
    assert ga["status"] == "ok" and ga["schema_version"] == SCHEMA_VERSION
    assert set(ga["metrics"]["none"]) == {"acc_forget", "acc_retain", "acc_test", "f1_forget", "f1_retain", "f1_test",
                                          "mia_auc"}
    assert set(ga["recovery"]) == {"rtn_int8", "bnb_nf4"} and list(ga["recovery"]["bnb_nf4"]) == ["acc_forget"]
    assert set(ga["analysis"]) == {"rtn_int8", "bnb_nf4"} and ga["analysis"]["rtn_int8"]["logit_shift_full"] > 0


def test_unlearning_lowers_forget_accuracy_of_a_classifier_that_learned_it(toy_table4):
    target, ga = (results_of(toy_table4, j)["metrics"]["none"] for j in ("0_target", "2_ga"))
    retrain = results_of(toy_table4, "1_retrain")["metrics"]["none"]
    assert target["acc_forget"] == 100.0 > retrain["acc_forget"]  # the target learned its forget set
    assert ga["acc_forget"] < target["acc_forget"]


def test_poisoned_posts_are_scored_under_their_true_labels(tmp_path, split_files):
    """A stand-in classifier that always says class 1: acc_forget counts the flipped (trained)
    labels that are 1, acc_poison_true the true labels that are 1."""
    from transformers import AutoTokenizer

    from quail_repro.classification import evaluate_classifier
    from quail_repro.models.classifier import resolve_checkpoint

    class AlwaysOne(torch.nn.Module):
        device = torch.device("cpu")

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.tensor([[0.0, 2.0]]).repeat(len(input_ids), 1)})()

    flip = corpus_of(tmp_path, "dataset=tweets_csv", *split_files, "forget@dataset.forget=label_flip",
                     "dataset.forget.fraction=0.3")
    tok = AutoTokenizer.from_pretrained(resolve_checkpoint(cfg_of("+experiment=classification").model.pretrained)[0])
    metrics, rows = evaluate_classifier(AlwaysOne(), tok, flip, cfg_of("+experiment=classification").eval)
    share_one = lambda ps: 100 * sum(p["label"] == 1 for p in ps) / len(ps)  # noqa: E731
    assert metrics["acc_forget"] == share_one(flip.split("forget"))
    assert metrics["acc_poison_true"] == share_one(flip.split("poison"))
    assert metrics["acc_forget"] + metrics["acc_poison_true"] == 100  # two classes: each post flipped
    assert 0 <= metrics["mia_auc"] <= 1
    assert [r["correct"] for r in rows["poison"]] == [float(p["label"] == 1) for p in flip.split("poison")]
