"""Mean ± sd over seeds and the recovery ratio's bootstrap interval, on hand-worked values."""
import pytest

from quail_repro.report.cells import Spread, error_bar
from quail_repro.recovery import UNBOUNDED, pooled_recovery, recovery_interval
from quail_repro.stats import mean_sd


def test_mean_and_sample_sd():
    assert mean_sd([40.0, 44.0]) == (42.0, pytest.approx(2 ** 1.5))  # sqrt((4 + 4) / (2 - 1))
    assert mean_sd([60.0, 62.0, 67.0]) == (63.0, pytest.approx(13 ** 0.5))  # (9 + 1 + 16) / 2 = 13
    assert mean_sd([5.0]) == (5.0, None)


def test_identical_questions_give_a_zero_width_interval_at_the_point_ratio():
    seed = {"full": [0.2] * 5, "quant": [0.5] * 5, "target_quant": [0.8] * 5}
    assert pooled_recovery([seed, seed]) == pytest.approx(0.5)
    low, high = recovery_interval([seed, seed])
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_two_questions_of_one_seed():
    # resampling questions {a, b} gives aa (ratio 0), ab or ba (0.5), bb (1) with chances 1/4, 1/2, 1/4:
    # the 2.5th and 97.5th percentiles are 0 and 1
    seed = {"full": [0.0, 0.0], "quant": [0.0, 1.0], "target_quant": [1.0, 1.0]}
    assert pooled_recovery([seed]) == 0.5
    assert recovery_interval([seed]) == (0.0, 1.0)


def test_seeds_are_resampled_and_pooled():
    # one question each: seed A recovers nothing (0), seed B everything (1); resampled pairs AA, AB, BA,
    # BB pool to 0, 0.5, 0.5, 1, so again 0 and 1 bound the interval; a narrower level does not reach them
    a = {"full": [0.0], "quant": [0.0], "target_quant": [1.0]}
    b = {"full": [0.0], "quant": [1.0], "target_quant": [1.0]}
    assert pooled_recovery([a, b]) == 0.5
    assert recovery_interval([a, b]) == (0.0, 1.0)
    assert recovery_interval([a, b], level=0.4) == (0.5, 0.5)


def test_no_interval_where_the_ratio_is_never_defined():
    same = {"full": [0.5, 0.5], "quant": [0.2, 0.9], "target_quant": [0.5, 0.5]}
    assert pooled_recovery([same]) is None and recovery_interval([same]) is None


def test_a_gap_that_one_question_carries_gives_an_unbounded_interval():
    # only question b separates the quantized target from the unlearned model (the point ratio is 1);
    # a resample draws aa with chance 1/4, and its gap is 0: 25% of resamples > the 2.5% a bounded 95%
    # interval allows (dropping them would leave ba, ab, bb, all exactly 1: an interval of one point)
    seed = {"full": [0.0, 0.0], "quant": [0.0, 1.0], "target_quant": [0.0, 1.0]}
    assert pooled_recovery([seed]) == 1.0
    assert recovery_interval([seed]) == UNBOUNDED
    # at level 0.4 a bounded interval may leave (1 - 0.4) / 2 = 30% on the wrong side: 25% is within
    assert recovery_interval([seed], level=0.4) == (1.0, 1.0)
    # the same gap on 12 of 12 questions never vanishes in a resample: bounded, at the point
    many = {"full": [0.0] * 12, "quant": [1.0] * 12, "target_quant": [1.0] * 12}
    assert recovery_interval([many]) == (1.0, 1.0)


def test_questions_of_one_source_document_are_resampled_together():
    # two towns of two questions each: town A's recovered nothing, town B's everything. Resampling
    # towns gives AA, AB, BA, BB (0, 0.5, 0.5, 1; 1/4 each): at level 0.8 the 10% tails are 0 and 1.
    # Resampling the four questions one by one would give a binomial spread, 0.25 to 0.75, too narrow
    # for questions that share what the model learned of their town.
    seed = {"full": [0.0] * 4, "quant": [0.0, 0.0, 1.0, 1.0], "target_quant": [1.0] * 4}
    assert recovery_interval([{**seed, "groups": ["A", "A", "B", "B"]}], level=0.8) == (0.0, 1.0)
    assert recovery_interval([seed], level=0.8) == (0.25, 0.75)
    assert pooled_recovery([{**seed, "groups": ["A", "A", "B", "B"]}]) == 0.5


def test_no_ratio_where_unlearning_removed_less_than_one_item_or_the_denominator_is_not_positive():
    # four questions; unlearning removed only question a (0.25 = one item's worth): defined, ratio 1
    one = {"full": [0.0] * 4, "quant": [1.0, 0, 0, 0], "target_quant": [1.0, 0, 0, 0], "target_full": [1.0, 0, 0, 0]}
    assert pooled_recovery([one]) == 1.0
    # a resample without a ((3/4)^4 = 32% of them) has no denominator: more than 2.5%, unbounded
    assert recovery_interval([one]) == UNBOUNDED
    # half a question removed on average (0.5 of one): undefined, however large the gap
    half = {**one, "target_full": [0.5, 0, 0, 0], "target_quant": [1.0] * 4}
    assert pooled_recovery([half]) is None and recovery_interval([half]) is None
    # the quantized target below the unlearned model: a negative denominator has no ratio
    below = {"full": [0.5] * 4, "quant": [0.5] * 4, "target_quant": [0.25] * 4, "target_full": [1.0] * 4}
    assert pooled_recovery([below]) is None
    # the gap is always 1, the removal is a's alone: 32% of resamples lack it, so at level 0.2
    # (40% may fall outside) the interval is bounded, at the pooled ratio 0
    gap = {**one, "quant": [0.0] * 4, "target_quant": [1.0] * 4}
    assert pooled_recovery([gap]) == 0.0
    assert recovery_interval([gap]) == UNBOUNDED and recovery_interval([gap], level=0.2) == (0.0, 0.0)


def test_a_cell_over_seeds_reads_mean_sd_n_and_what_is_missing():
    assert Spread((40.0, 44.0), (("failed", 1),)).text("num") == "42.0 ± 2.8 (n=2, 1 failed)"
    assert Spread((41.2,), (("missing", 2),)).text("num") == "41.2 (n=1, 2 missing)"
    assert Spread((), (("failed", 3),)).text("num") == "— (3 failed)"
    assert Spread((0.5, 1.0), interval=(0.0, 1.0)).text("ratio") == "0.75 ± 0.35 (n=2; 95% CI 0.00 to 1.00)"
    assert Spread((1.0, 1.0), interval=UNBOUNDED).text("ratio") == "1.00 ± 0.00 (n=2; 95% CI unbounded)"


def test_a_pooled_cell_shows_its_estimate_and_the_seeds_beside_it():
    cell = Spread((0.2, 1.2), pooled=True, point=0.5, interval=(0.1, 0.9))
    assert cell.text("ratio") == "0.50 (pooled; per seed 0.70 ± 0.71, n=2; 95% CI 0.10 to 0.90)"
    assert Spread((0.2,), pooled=True, point=None).text("ratio") == "undefined (pooled; per seed 0.20, n=1)"


def test_error_bars_are_never_negative_or_infinite_whatever_the_estimates():
    # a pooled estimate outside its own percentile interval: the bar on that side is 0, not negative
    assert error_bar(Spread((0.1, 0.3), pooled=True, point=0.95, interval=(0.2, 0.9))) == (0.95, (0.75, 0.0))
    # an unbounded interval falls back to the seeds' sd; no estimate or an infinite one: nothing drawn
    assert error_bar(Spread((1.0, 3.0), interval=UNBOUNDED)) == (2.0, (2 ** 0.5, 2 ** 0.5))
    assert error_bar(Spread((0.2,), pooled=True, point=None)) is None
    assert error_bar(float("inf")) is None and error_bar(None) is None and error_bar(0.4) == (0.4, (0.0, 0.0))


def test_a_figure_of_awkward_estimates_is_drawn(tmp_path):
    from quail_repro.report.figures import bars

    series = {"4-bit": [Spread((0.1, 0.3), pooled=True, point=0.95, interval=(0.2, 0.9)),
                        Spread((1.0, 3.0), interval=UNBOUNDED), float("nan"), None, -2.0]}
    path = bars(["a", "b", "c", "d", "e"], series, "recovery", tmp_path / "fig.png", "%.2f")
    assert path.stat().st_size > 0
