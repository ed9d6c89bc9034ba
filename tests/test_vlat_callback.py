from collections import Counter

import pytest
import torch

from vlat.training.vlat_callback import VirtualLongformCallback, strategy_factors


@pytest.mark.parametrize(
    "strategy,expected",
    [("default", [1, 5, 10, 15, 20, 25]), ("limited", [1, 5, 10]), ("fixed", [20])],
)
def test_discrete_strategies_are_uniform_over_their_sets(strategy, expected):
    cb = VirtualLongformCallback(strategy, seed=1)
    n = 6000
    counts = Counter(cb.draw() for _ in range(n))
    assert sorted(counts) == [float(x) for x in expected]
    for value in counts.values():  # uniform: each within 5 standard deviations of n / k
        k = len(expected)
        sd = (n * (1 / k) * (1 - 1 / k)) ** 0.5
        assert abs(value - n / k) < 5 * sd + 1e-9


@pytest.mark.parametrize("strategy,points", [("dense", 100), ("very_dense", 1000)])
def test_dense_strategies(strategy, points):
    factors = strategy_factors(strategy)
    assert len(factors) == points and factors[0] == 1.0 and factors[-1] == 25.0
    steps = torch.tensor(factors, dtype=torch.float64).diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 24 / (points - 1)), atol=1e-9, rtol=0)
    cb = VirtualLongformCallback(strategy, seed=0)
    draws = [cb.draw() for _ in range(20000)]
    assert set(draws) <= set(factors)
    assert abs(sum(draws) / len(draws) - 13.0) < 0.3  # mean of a uniform grid on [1, 25]
    assert len(set(draws)) > 0.9 * points


def test_custom_and_invalid():
    cb = VirtualLongformCallback("custom", factors=[2, 3.5], seed=0)
    assert {cb.draw() for _ in range(200)} == {2.0, 3.5}
    with pytest.raises(ValueError, match="factors"):
        VirtualLongformCallback("custom", factors=[])
    with pytest.raises(ValueError, match="factors"):
        VirtualLongformCallback("default", factors=[2.0])
    with pytest.raises(ValueError, match="strategy"):
        VirtualLongformCallback("wide")


def test_same_seed_same_sequence_and_state_restores():
    a, b = VirtualLongformCallback("dense", seed=7), VirtualLongformCallback("dense", seed=7)
    seq_a = [a.draw() for _ in range(50)]
    assert seq_a == [b.draw() for _ in range(50)]
    assert seq_a != [VirtualLongformCallback("dense", seed=8).draw() for _ in range(50)]
    state = a.state_dict()
    rest = [a.draw() for _ in range(30)]
    c = VirtualLongformCallback("dense", seed=123)
    c.load_state_dict(state)
    assert [c.draw() for _ in range(30)] == rest


def test_per_sample_draws():
    """Per sample: one factor per row from the strategy's set, the shared generator advanced once per batch (so a
    restored state continues the same sequence), different rows and ranks drawing different factors."""
    cb = VirtualLongformCallback("default", seed=3, per_sample=True)
    batches = [cb.draw_per_sample(8) for _ in range(200)]
    assert cb.draws == 200 and all(len(b) == 8 for b in batches)
    flat = [f for b in batches for f in b]
    assert set(flat) == {1.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert sum(len(set(b)) > 1 for b in batches) > 190  # rows of a batch differ (all equal: 6 * 6**-8 per batch)
    state = cb.state_dict()
    assert state["per_sample"] is True
    rest = [cb.draw_per_sample(4, rank=1) for _ in range(20)]
    again = VirtualLongformCallback("default", seed=99, per_sample=True)
    again.load_state_dict(state)
    assert [again.draw_per_sample(4, rank=1) for _ in range(20)] == rest
    again.load_state_dict(state)
    assert [again.draw_per_sample(4, rank=0) for _ in range(20)] != rest  # another rank, other factors


def test_per_sample_factors_reach_the_position_math(tiny_model):
    """Not only the log: each row's audio run is laid over its own drawn factor x the original window, in the
    positions the rotary embedding turns into cos / sin (n audio tokens on linspace(p, p + S - 1, n))."""
    import copy
    from types import SimpleNamespace

    from test_rope import _batch, _sample

    from vlat.rope import AudioRopeConfig, apply_audio_rope, find_audio_model

    model = copy.deepcopy(tiny_model)
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=4))
    batch = _batch([_sample(model, 8, seed=i) for i in range(4)], "right")
    cb = VirtualLongformCallback("default", seed=3, per_sample=True)
    expected = VirtualLongformCallback("default", seed=3, per_sample=True).draw_per_sample(4)
    assert len(set(expected)) > 1  # the rows drew different factors
    logged = {}
    module = SimpleNamespace(model=model, log=lambda name, value, **kw: logged.update({name: value}))
    cb.on_train_batch_start(SimpleNamespace(global_rank=0), module, batch, 0)
    rotary = find_audio_model(model).language_model.rotary_emb
    seen = []
    handle = rotary.register_forward_hook(lambda m, args, out: seen.append(m.plan.positions.clone()))
    with torch.no_grad():
        model(**batch)
    handle.remove()
    audio = batch["input_ids"] == model.config.audio_token_index
    for row, f in enumerate(expected):
        pos = seen[0][row][audio[row]]
        span = round(f * 4)
        torch.testing.assert_close(pos, torch.linspace(3, 3 + span - 1, 8), atol=1e-5, rtol=0)
    assert logged["vlat/virtual_factor"] == sum(expected) / 4
