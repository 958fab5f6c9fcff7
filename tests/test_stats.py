"""Mean ± sd over seeds and the recovery ratio's bootstrap interval, on hand-worked values."""
import pytest

from quail_repro.report.cells import Spread
from quail_repro.stats import UNBOUNDED, mean_sd, pooled_recovery, recovery_interval


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


def test_a_cell_over_seeds_reads_mean_sd_n_and_what_is_missing():
    assert Spread((40.0, 44.0), (("failed", 1),)).text("num") == "42.0 ± 2.8 (n=2, 1 failed)"
    assert Spread((41.2,), (("missing", 2),)).text("num") == "41.2 (n=1, 2 missing)"
    assert Spread((), (("failed", 3),)).text("num") == "— (3 failed)"
    assert Spread((0.5, 1.0), interval=(0.0, 1.0)).text("ratio") == "0.75 ± 0.35 (n=2; 95% CI 0.00 to 1.00)"
    assert Spread((1.0, 1.0), interval=UNBOUNDED).text("ratio") == "1.00 ± 0.00 (n=2; 95% CI unbounded)"
