"""Hand-worked values for the MUSE metric arithmetic (quail_repro.eval.metrics)."""

import math

import pytest
import torch

from quail_repro.eval.metrics import (
    mean_rouge_l,
    min_k_percent_score,
    privleak,
    privleak_auc,
    rouge_l_f1,
    truncate_knowmem_answer,
)
from quail_repro.eval.muse_eval import knowmem_prompt
from quail_repro.recovery import recovery_ratio

# ---------------------------------------------------------------- ROUGE-L


def test_rouge_l_lcs_by_hand():
    # pred: the cat sat on the mat / ref: the cat lay on a mat
    # LCS = "the cat on mat" = 4 words; P = R = 4/6, so F = 2/3.
    assert rouge_l_f1("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)
    # pred a b c (3), ref a c d e (4): LCS "a c" = 2; P = 2/3, R = 1/2, F = 2PR/(P+R) = 4/7.
    assert rouge_l_f1("a b c", "a c d e") == pytest.approx(4 / 7)


def test_rouge_l_edge_cases():
    # rouge_score lowercases and drops punctuation: these are the same word sequence.
    assert rouge_l_f1("The Cat, sat.", "the cat sat") == pytest.approx(1.0)
    assert rouge_l_f1("", "the cat") == 0.0
    assert rouge_l_f1("dog", "the cat") == 0.0
    # No stemming (MUSE's setting): "cats" and "cat" do not match.
    assert rouge_l_f1("cats", "cat") == 0.0


def test_mean_rouge_l_is_x100_mean():
    preds = ["a b c", "the cat sat on the mat"]
    refs = ["a c d e", "the cat lay on a mat"]
    assert mean_rouge_l(preds, refs) == pytest.approx(100 * (4 / 7 + 2 / 3) / 2)


def test_mean_rouge_l_rejects_bad_input():
    with pytest.raises(ValueError):
        mean_rouge_l(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        mean_rouge_l([], [])


# ---------------------------------------------------------------- KnowMem answer cut


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Paris\n\nQuestion: next one", "Paris"),
        (" Paris\nQuestion: next", "Paris"),
        ("Paris Question: next", "Paris"),
        ("Paris, France\nthe capital", "Paris, France\nthe capital"),  # single newline kept
        ("A Question: B\n\nC", "A"),  # earliest marker wins, whatever its order in the list
        ("A\n\nB Question: C", "A"),
        ("  no markers  ", "no markers"),
        ("Question: only", ""),
    ],
)
def test_truncate_knowmem_answer(raw, expected):
    assert truncate_knowmem_answer(raw) == expected


def test_knowmem_prompt_exact_format():
    icl = [{"question": "Who is the mayor?", "answer": "Ann Lee"},
           {"question": "Where is the plant?", "answer": "Oakdale"}]
    expected = (
        "Question: Who is the mayor?\nAnswer: Ann Lee\n\n"
        "Question: Where is the plant?\nAnswer: Oakdale\n\n"
        "Question: What opened on Monday?\nAnswer: "
    )
    assert knowmem_prompt(icl, "What opened on Monday?", trailing_space=True) == expected
    assert knowmem_prompt([], "Q?", trailing_space=True) == "Question: Q?\nAnswer: "


# ---------------------------------------------------------------- Min-K% Prob


def test_min_k_by_hand():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    # int(5 * 0.4) = 2 lowest: -5, -4 -> mean -4.5 -> score 4.5
    assert min_k_percent_score(lp, 0.4) == pytest.approx(4.5)
    # int(3 * 0.4) = int(1.2) = 1 (rounded down, as the reference): lowest is -3
    assert min_k_percent_score([-0.5, -3.0, -1.0], 0.4) == pytest.approx(3.0)
    # int(4 * 0.4) = 1, not ceil = 2: lowest only -> 2.0 (ceil would give 1.5)
    assert min_k_percent_score([-1.0, -2.0, -0.5, -0.1], 0.4) == pytest.approx(2.0)
    # k = 1 is minus the mean log-prob
    assert min_k_percent_score(lp, 1.0) == pytest.approx(3.0)
    # too short for int(n*k) >= 1: we keep one token instead of the reference's NaN
    assert min_k_percent_score([-2.0, -0.5], 0.4) == pytest.approx(2.0)


def test_min_k_accepts_tensors_and_rejects_bad_input():
    assert min_k_percent_score(torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0]), 0.4) == pytest.approx(4.5)
    with pytest.raises(ValueError):
        min_k_percent_score([], 0.4)
    with pytest.raises(ValueError):
        min_k_percent_score([-1.0], 0.0)
    with pytest.raises(ValueError):
        min_k_percent_score([-1.0, float("nan")], 0.4)


# ---------------------------------------------------------------- AUC and PrivLeak


def test_privleak_auc_by_hand():
    # Memorized forget set: forget scores (Min-K%) all below holdout -> AUC 0.
    assert privleak_auc([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.0)
    # The opposite -> 1.
    assert privleak_auc([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    # AUC = P(holdout score < forget score). forget {1,4,5}, holdout {2,3,6}:
    # holdout 2 < 4,5; 3 < 4,5; 6 < none -> 4 of 9 pairs.
    assert privleak_auc([1.0, 4.0, 5.0], [2.0, 3.0, 6.0]) == pytest.approx(4 / 9)
    # A tie counts half.
    assert privleak_auc([1.0], [1.0]) == pytest.approx(0.5)
    # forget {2,2}, holdout {1,2}: pairs (1<2) twice = 2, ties (2,2) twice = 1 -> 3/4
    assert privleak_auc([2.0, 2.0], [1.0, 2.0]) == pytest.approx(0.75)


def test_privleak_auc_rejects_empty():
    with pytest.raises(ValueError):
        privleak_auc([], [1.0])
    with pytest.raises(ValueError):
        privleak_auc([1.0], [float("inf")])


def test_privleak_by_hand():
    assert privleak(0.25, 0.5) == pytest.approx(-50.0)
    assert privleak(0.75, 0.5) == pytest.approx(50.0)
    assert privleak(0.4772, 0.4772) == pytest.approx(0.0)
    # Full leak (AUC 0) is -100 whatever the reference AUC.
    assert privleak(0.0, 0.5393) == pytest.approx(-100.0)
    with pytest.raises(ValueError):
        privleak(0.5, 0.0)
    with pytest.raises(ValueError):
        privleak(math.nan, 0.5)


def test_recovery_ratio_by_hand():
    # unlearning took KnowMem-f from 90 (target) to 20; at 4-bit the target keeps 80 and the unlearned
    # model climbs back to 50: (50 - 20) / (80 - 20) = 0.5 of what the quantized target still knows
    one = 100 / 64  # one question's worth of 64
    assert recovery_ratio(20.0, 50.0, 80.0, target_full=90.0, one_item=one) == pytest.approx(0.5)
    assert recovery_ratio(20.0, 10.0, 80.0, target_full=90.0, one_item=one) == pytest.approx(-1 / 6)  # 4-bit forgot more
    # unlearning removed nothing (95.3 both): the quantized copy moving with the quantized target
    # (95.3 -> 96.9 for both) is quantization's own effect, not recovery
    assert recovery_ratio(95.3, 96.9, 96.9, target_full=95.3, one_item=one) is None
    # it removed 1.0 point, less than one question's 1.5625: the ratio, 1.7 / 0.3 = 5.7, would be noise
    assert recovery_ratio(94.3, 96.0, 94.6, target_full=95.3, one_item=one) is None
    assert recovery_ratio(93.7375, 96.0, 96.0, target_full=95.3, one_item=one) == pytest.approx(1.0)  # exactly one
    assert recovery_ratio(20.0, 50.0, 20.0, target_full=90.0, one_item=one) is None  # zero denominator
    assert recovery_ratio(20.0, 50.0, 15.0, target_full=90.0, one_item=one) is None  # negative denominator
    assert recovery_ratio(None, 50.0, 80.0, target_full=90.0, one_item=one) is None  # a metric the corpus could not give
