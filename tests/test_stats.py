"""95% intervals of a cell and of a paired difference, against values computed by hand (formulas in the module)."""

import pytest

from vlat.evaluation.stats import accuracy_interval, distinguishable, paired_difference, t975, wilson


def test_t_quantiles_and_wilson_by_hand():
    assert t975(1) == 12.706 and t975(3) == 3.182 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.0211, abs=1e-3) and t975(120) == pytest.approx(1.9799, abs=1e-3)
    # 50 of 100: the textbook Wilson interval
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_independent_looking_recordings_give_the_plain_wilson_interval():
    # 20 recordings x 5 questions, 3 right in each: no spread between recordings, design effect 1 -> Wilson(0.6, 100)
    iv = accuracy_interval([3] * 20, [5] * 20)
    assert (iv.estimate, iv.questions, iv.recordings) == (0.6, 100, 20)
    assert (iv.low, iv.high) == pytest.approx((0.5020, 0.6906), abs=1e-4)


def test_recordings_answered_all_or_nothing_widen_the_interval():
    # 12 recordings all right, 8 all wrong: p = 0.6; cluster variance 20/19 * (12*2^2 + 8*3^2) / 100^2 = 0.012632,
    # binomial 0.0024, design effect 5.263, effective questions 19.0 -> Wilson(0.6, 19)
    iv = accuracy_interval([5] * 12 + [0] * 8, [5] * 20)
    assert iv.estimate == 0.6
    assert (iv.low, iv.high) == pytest.approx((0.3816, 0.7848), abs=1e-4)
    plain = accuracy_interval([3] * 20, [5] * 20)
    assert iv.high - iv.low > 2 * (plain.high - plain.low)


def test_one_recording_is_one_observation():
    iv = accuracy_interval([4], [5])  # Wilson(0.8, 1): center 0.5620, half 0.4285
    assert (iv.low, iv.high) == pytest.approx((0.1335, 0.9905), abs=1e-4)
    everything = accuracy_interval([5, 5], [5, 5])  # 100%: a proper interval below 1, not [1, 1]
    assert (everything.low, everything.high) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_paired_difference_by_hand():
    # A minus B, per recording of 5 questions: +1, +2, 0, +1 -> d = 4/20 = 0.2; residuals 0, 1, -1, 0;
    # variance 4/3 * 2 / 400 = 0.0066667, se 0.08165, t(3) = 3.182 -> 0.2 +- 0.2598: not distinguishable
    four = paired_difference([1, 2, 0, 1], [5] * 4)
    assert four.estimate == 0.2 and (four.low, four.high) == pytest.approx((-0.0598, 0.4598), abs=1e-4)
    assert distinguishable(four) is False
    # twice the recordings, same pattern: variance 8/7 * 4 / 1600, se 0.05345, t(7) = 2.365 -> 0.2 +- 0.1264
    eight = paired_difference([1, 2, 0, 1] * 2, [5] * 8)
    assert (eight.low, eight.high) == pytest.approx((0.0736, 0.3264), abs=1e-4) and distinguishable(eight) is True
    # identical settings: exactly zero, not distinguishable; one recording: no interval
    assert distinguishable(paired_difference([0, 0, 0], [5, 5, 5])) is False
    single = paired_difference([2], [5])
    assert single.low is None and distinguishable(single) is None


def _pred(compression, rec, qid, correct, method="vanilla"):
    return {"adapter": "base", "compression": compression, "method": method, "length": 2.0, "id": qid,
            "recording": rec, "duration_s": 120.0, "correct": correct, "unparsable": False, "audio_tokens": 3000,
            "category": "first" if qid in ("q1", "q3") else "last"}  # fmt: skip


def test_cells_and_paired_rows_from_predictions_by_hand():
    from vlat.evaluation.tables import aggregate, paired

    # two recordings x 2 questions; "none" right on 3 of 4, "pool:2" on 1 of 4; per recording pool - none: -1, -1
    truth = {("r1", "q1"): (1, 0), ("r1", "q2"): (1, 1), ("r2", "q3"): (1, 0), ("r2", "q4"): (0, 0)}
    preds = [_pred(c, r, q, ok[i]) for (r, q), ok in truth.items() for i, c in enumerate(("none", "pool:2"))]
    rows = {r["compression"]: r for r in aggregate(preds)}
    assert rows["none"]["accuracy"] == 0.75 and rows["pool:2"]["accuracy"] == 0.25
    assert rows["none"]["questions"] == 4 and rows["none"]["recordings"] == 2 and len(aggregate(preds)) == 2
    kinds = {(r["compression"], r["category"]): r for r in aggregate(preds, by_category=True)}
    assert kinds["none", "first"]["accuracy"] == 1.0 and kinds["none", "last"]["accuracy"] == 0.5
    assert kinds["pool:2", "first"]["questions"] == 2 and kinds["pool:2", "last"]["accuracy"] == 0.5
    [row] = paired(preds, [("pool:2", "none")])
    assert row["dimension"] == "compression" and "compression" not in row and row["method"] == "vanilla"
    assert row["difference"] == -0.5 and row["questions"] == 4 and row["recordings"] == 2
    # residuals -1 - (-0.5)*2 = 0 for both recordings: variance 0, the interval is the point
    assert (row["ci95_low"], row["ci95_high"]) == (-0.5, -0.5) and row["distinguishable"] is True
    assert paired(preds, [("partial_pi", "vanilla")]) == []  # not a pair of this evaluation's values


def test_compare_pairs_parse_methods_compressions_and_adapter_labels():
    from vlat.evaluation.runner import EvalInputError, EvalSpec, resolve_pairs

    spec = EvalSpec(
        model="m",
        data="d",
        methods=["vanilla", "partial_pi", "whole_pi"],
        compressions=["none", "pool:2", "ltbm:0.5:global"],
        compare=["pool:2:none", "ltbm:0.5:global:pool:2", "vlat:ft", "whole_pi:partial_pi"],
    )
    assert resolve_pairs(spec, ["vlat", "ft"]) == [
        ("pool:2", "none"),
        ("ltbm:0.5:global", "pool:2"),
        ("vlat", "ft"),
        ("whole_pi", "partial_pi"),
    ]
    default = EvalSpec(model="m", data="d", methods=["vanilla", "partial_pi", "whole_pi"])
    assert resolve_pairs(default, ["base"]) == [("partial_pi", "vanilla"), ("whole_pi", "vanilla")]
    with pytest.raises(EvalInputError, match="--compare vanilla:pool:2: expected A:B"):
        resolve_pairs(EvalSpec(model="m", data="d", compare=["vanilla:pool:2"]), ["base"])
