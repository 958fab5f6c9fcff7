"""Every config file composes with Hydra's compose API; unknown choices fail by name; an option
that reads the user's own data instantiates given a small valid file and, without one, fails at the
config check with a ConfigError naming the key to set."""
import csv
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from quail_repro.errors import ConfigError
from quail_repro.validate import check_config

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ["model", "dataset", "method", "quant", "eval", "logger", "numerics"]
#: options with no data of their own: the key that must name the user's data
USER_DATA = {("dataset", "tweets_csv"): "dataset.file", ("dataset", "tweets_hub"): "dataset.path",
             ("dataset", "muse_dir"): "dataset.path"}


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _posts(n: int, offset: int = 0) -> list[list]:
    return [[f"post {i} about claim {i % 3}", ("reliable", "misinformation")[i % 2]] for i in range(offset, offset + n)]


def user_data(option: str, tmp_path: Path) -> str:
    """A small valid copy of the data ``option`` reads, written under ``tmp_path``: the value for
    its USER_DATA key."""
    if option == "tweets_csv":  # one file, cut into train / val / test by split_fractions
        return str(_write_csv(tmp_path / "posts.csv", ["tweet", "label"], _posts(10)))
    if option == "tweets_hub":  # a local folder is a dataset name to datasets.load_dataset
        folder = tmp_path / "hub_posts"
        folder.mkdir()
        for split, n in (("train", 8), ("validation", 2), ("test", 2)):
            _write_csv(folder / f"{split}.csv", ["text", "label"], _posts(n, offset=100 * len(split)))
        return str(folder)
    if option == "muse_dir":  # a folder in MUSE's layout: the toy corpus
        from quail_repro.data.mini_corpus import write_mini_corpus
        return str(write_mini_corpus(tmp_path / "my_muse", **_compose(["+experiment=toy"]).dataset.generator))
    raise AssertionError(f"no user data known for {option}: add it to user_data")


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(group, option, tmp_path):
    override = f"{group}=[{option}]" if group == "quant" else f"{group}={option}"
    cfg = _compose([override])
    if (group, option) in USER_DATA:  # composes as shipped; instantiates given the user's data
        assert OmegaConf.select(cfg, USER_DATA[group, option]) is None
        cfg = _compose([override, f"{USER_DATA[group, option]}={user_data(option, tmp_path)}"])
    node = cfg.quant[option] if group == "quant" else cfg[group]
    if group == "method":
        assert cfg.method.name == option
        if cfg.method.loss is not None:  # the forget loss with what is composed over it (retain, saliency, hinge)
            from quail_repro.validate import build_method
            assert build_method(cfg.method)[0] is not None
    elif "_target_" in node:
        assert node.get("name", option) == option
        assert instantiate(node) is not None
    else:
        assert node  # eval configs are plain settings


@pytest.mark.parametrize("group,option", sorted(USER_DATA))
def test_an_option_reads_the_users_small_valid_data(group, option, tmp_path):
    key = USER_DATA[group, option]
    source = instantiate(_compose([f"{group}={option}", f"{key}={user_data(option, tmp_path)}"])[group])
    if option == "muse_dir":
        assert source.load(source.path).raw["forget"]  # the folder read back as a corpus
    else:
        splits, content = source.raw_splits()
        assert content and sorted(splits) == ["test", "train", "val"] and all(splits.values())


@pytest.mark.parametrize("group,option", sorted(USER_DATA))
def test_without_the_users_data_the_config_check_names_the_key(group, option):
    with pytest.raises(ConfigError, match=re.escape(USER_DATA[group, option])) as err:
        check_config(_compose([f"{group}={option}", "device=cpu"]))
    assert f"{group}={option}" in str(err.value)


def test_tweets_csv_takes_files_or_file_not_both(tmp_path):
    posts = _write_csv(tmp_path / "posts.csv", ["tweet", "label"], _posts(10))
    files = f"dataset.files={{train: {posts}, val: {posts}, test: {posts}}}"
    with pytest.raises(ConfigError, match=r"either dataset\.files .* or dataset\.file "):
        check_config(_compose(["dataset=tweets_csv", files, f"dataset.file={posts}", "device=cpu"]))
    assert instantiate(_compose(["dataset=tweets_csv", files]).dataset).files["val"] == posts


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = _compose([f"+experiment={experiment}"])
    assert cfg.method.name


def test_default_quant_is_a_list_of_precisions():
    cfg = _compose([])
    assert list(cfg.quant) == ["none", "rtn_int4", "bnb_nf4"]
    cfg = _compose(["quant=[none,rtn_int8,bnb_fp4]"])
    assert list(cfg.quant) == ["none", "rtn_int8", "bnb_fp4"]
    assert cfg.quant.bnb_fp4.quant_type == "fp4"


def test_unknown_choice_names_the_option():
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        _compose(["method=gradient_magic"])
    assert "gradient_magic" in str(err.value)
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        _compose(["quant=[none,int5]"])
    assert "int5" in str(err.value)


@pytest.mark.parametrize("recipe,epochs,batch", [("zhang2025_news", 10, 2), ("zhang2025_books", 5, 1)])
def test_the_reference_recipe_is_one_choice(recipe, epochs, batch):
    alphas = {"zhang2025_news": (1.0, 1.0, 1.0), "zhang2025_books": (100.0, 2.0, 100.0)}[recipe]
    assert tuple(_compose([f"recipe={recipe}", f"method={m}"]).method.retain.alpha
                 for m in ("ga_gdr", "npo_klr", "quail")) == alphas
    assert _compose(["method=ga_gdr"]).method.retain.alpha == 30.0  # the embedded default's own
    assert _compose(["method=ga_gdr"]).method.early_stop is not None  # the embedded default stops on a state
    cfg = _compose([f"recipe={recipe}", "method=npo_klr"])
    m = cfg.method
    assert (m.lr, m.epochs, m.batch_size, m.max_length) == (1e-5, epochs, batch, 2048)
    assert m.early_stop is None  # every epoch, as the reference ran
    assert (m.param_dtype, m.grad_clip, m.data_layout, m.retain_split) == ("native", 1.0, "muse_bos_chunks", "retain1")
    assert m.retain.kl_reduction == "batchmean" and cfg.model.dtype == "bfloat16" and cfg.eval.knowmem.n_icl == 10
    assert list(cfg.quant) == ["none", "bnb_int8", "bnb_fp4"]
    assert cfg.quant.bnb_fp4.compute_dtype == "float32" and cfg.quant.bnb_fp4.blocksize == 64
    assert instantiate(m.loss) is not None


def test_the_seed_varies_training_not_the_corpus():
    a, b = _compose(["seed=0"]), _compose(["seed=1"])
    assert a.dataset.generator == b.dataset.generator
    assert (a.model.train.seed, b.model.train.seed, a.method.seed, b.method.seed) == (0, 1, 0, 1)
