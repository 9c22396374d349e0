"""NeuronMask (counts, persistence, model checks) and allocate (local, global, reference rounding)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from llmrank_graph.pruning.masks import NeuronMask, allocate
from llmrank_graph.scoring.registry import NeuronScores


def _rand_scores(sizes, seed=0, hidden=None):
    g = torch.Generator().manual_seed(seed)
    inter = {l: torch.rand(m, generator=g, dtype=torch.float64) for l, m in enumerate(sizes)}
    hid = None if hidden is None else {l: torch.rand(hidden, generator=g, dtype=torch.float64)
                                       for l in range(len(sizes))}
    return NeuronScores(inter, hid, "test", {})


def _pruned_set(keep: torch.Tensor) -> set[int]:
    return set((~keep).nonzero().flatten().tolist())


# ----------------------------------------------------------------------------- NeuronMask
def test_mask_counts_and_indices():
    mask = NeuronMask({0: torch.tensor([True, False, True, False]), 1: torch.tensor([False, True, True])})
    assert mask.layers == [0, 1]
    assert mask.n_total() == 7 and mask.n_kept() == 4 and mask.n_pruned() == 3
    assert mask.n_kept(0) == 2 and mask.n_pruned(1) == 1
    assert mask.fraction == pytest.approx(3 / 7)
    assert mask.sizes() == [2, 2]
    assert mask.kept_indices(0).tolist() == [0, 2]
    assert mask.pruned_indices(1).tolist() == [0]
    assert mask.n_hidden_pruned() == 0


def test_mask_constructor_errors():
    with pytest.raises(TypeError, match="bool"):
        NeuronMask({0: torch.tensor([1, 0, 1])})
    with pytest.raises(ValueError, match="1-D"):
        NeuronMask({0: torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="keeps no neuron of layer 1"):
        NeuronMask({0: torch.tensor([True]), 1: torch.tensor([False, False])})
    with pytest.raises(ValueError, match="layer indices"):
        NeuronMask({-1: torch.tensor([True])})
    with pytest.raises(ValueError, match="`hidden` has layer 3"):
        NeuronMask({0: torch.tensor([True])}, hidden={3: torch.tensor([True])})


def test_mask_dict_roundtrip_is_json_and_equal():
    mask = NeuronMask({0: torch.tensor([True, False, True]), 1: torch.tensor([False, True, True])},
                      hidden={0: torch.tensor([True, False]), 1: torch.tensor([True, True])},
                      meta={"method": "wpr", "amount": 0.3})
    data = json.loads(json.dumps(mask.to_dict()))
    back = NeuronMask.from_dict(data)
    assert back == mask
    assert back.hidden[0].tolist() == [True, False]
    other = NeuronMask.from_dict({**data, "hidden": None})
    assert other != mask
    flipped = mask.to_dict()
    flipped["intermediate"]["1"] = [True, True, False]
    assert NeuronMask.from_dict(flipped) != mask
    with pytest.raises(ValueError, match="'intermediate' key"):
        NeuronMask.from_dict({"layers": {}})


def test_mask_save_load(tmp_path):
    mask = NeuronMask({0: torch.tensor([True, False, True]), 2: torch.tensor([False, True])},
                      hidden={0: torch.tensor([True, False]), 2: torch.tensor([False, True])}, meta={"a": 1})
    path = mask.save(tmp_path / "sub" / "mask.safetensors")
    assert NeuronMask.load(path) == mask
    plain = NeuronMask({0: torch.tensor([True, False])})
    plain.save(tmp_path / "plain.safetensors")
    loaded = NeuronMask.load(tmp_path / "plain.safetensors")
    assert loaded == plain and loaded.hidden is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.safetensors", "sub"]
    with pytest.raises(FileNotFoundError):
        NeuronMask.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an llmrank_graph NeuronMask file"):
        NeuronMask.load(tmp_path / "other.safetensors")


def test_mask_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        NeuronMask({0: torch.tensor([True, False])}).save(tmp_path / "mask.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_mask_check_model(tiny_llama, tiny_gpt2):
    ok = NeuronMask({l: torch.ones(24, dtype=torch.bool) for l in range(3)})
    ok.check_model(tiny_llama)
    bad = NeuronMask({0: torch.ones(24, dtype=torch.bool), 1: torch.ones(20, dtype=torch.bool),
                      2: torch.ones(24, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"layer 1 \(model\.layers\.1\.mlp\.up_proj\) has 24 .* but 20 in the mask"):
        bad.check_model(tiny_llama)
    with pytest.raises(ValueError, match=r"layers \[0, 1\] but the model has 3 MLP layers"):
        NeuronMask({l: torch.ones(24, dtype=torch.bool) for l in range(2)}).check_model(tiny_llama)
    hid = NeuronMask({l: torch.ones(24, dtype=torch.bool) for l in range(3)},
                     hidden={0: torch.ones(15, dtype=torch.bool)})
    with pytest.raises(ValueError, match="layer 0 .* has 16 hidden channels in the model but 15"):
        hid.check_model(tiny_llama)
    # GPT-2 (Conv1D): m = 4 * 16 = 64
    NeuronMask({l: torch.ones(64, dtype=torch.bool) for l in range(2)}).check_model(tiny_gpt2)


# ----------------------------------------------------------------------------- local
@pytest.mark.parametrize("amount", [0.0, 0.1, 0.25, 0.3, 0.5, 0.75])
@pytest.mark.parametrize("rounding", ["round", "floor", "reference"])
def test_local_counts_and_lowest(amount, rounding):
    sizes = [10, 13, 24]
    scores = _rand_scores(sizes, seed=1)
    mask = allocate(scores, amount, "local", rounding=rounding)
    for l, m in enumerate(sizes):
        expect = math.floor(amount * m + 1e-9) if rounding == "floor" else round(amount * m)
        assert mask.n_pruned(l) == expect
        lowest = set(np.argsort(scores.intermediate[l].numpy())[:expect].tolist())
        assert _pruned_set(mask.intermediate[l]) == lowest
    assert mask.meta["allocation"] == "local" and mask.meta["amount"] == amount


def test_local_round_is_half_to_even_like_torch():
    # 0.25 * 10 = 2.5 -> 2 ; 0.35 * 10 = 3.5 -> 4 ; 0.5 * 13 = 6.5 -> 6
    scores = {0: torch.arange(10.0), 1: torch.arange(13.0)}
    assert allocate(scores, 0.25, rounding="round").n_pruned(0) == 2
    assert allocate(scores, 0.35, rounding="round").n_pruned(0) == 4
    assert allocate(scores, 0.5, rounding="round").n_pruned(1) == 6


def test_ties_are_deterministic_lowest_index_first():
    scores = {0: torch.tensor([1.0, 0.5, 0.5, 0.5, 2.0]), 1: torch.ones(5)}
    mask = allocate(scores, 0.4, "local")
    assert mask.pruned_indices(0).tolist() == [1, 2]
    assert mask.pruned_indices(1).tolist() == [0, 1]
    assert allocate(scores, 0.4, "local") == mask


def test_local_that_empties_a_layer_raises():
    with pytest.raises(ValueError, match=r"would keep 0 of 3 neurons of layer 1, below min_keep=1"):
        allocate({0: torch.rand(10), 1: torch.rand(3)}, 0.9, "local")
    with pytest.raises(ValueError, match="below min_keep=4"):
        allocate({0: torch.rand(10)}, 0.7, "local", min_keep=4)
    # the reference has no floor but still refuses to prune a whole module
    with pytest.raises(ValueError, match="would prune all 3 neurons of layer 1"):
        allocate({0: torch.rand(10), 1: torch.rand(3)}, 0.9, "local", rounding="reference")


# ----------------------------------------------------------------------------- global
def _global_reference(scores: dict, amount: float, floors: list[int]) -> list[set[int]]:
    """Brute force: repeatedly prune the globally lowest normalised score of a layer above its floor."""
    normed = {l: (s / s.abs().mean()).tolist() for l, s in scores.items()}
    k = round(amount * sum(len(v) for v in normed.values()))
    pruned = {l: set() for l in normed}
    for _ in range(k):
        best = None
        for l, v in normed.items():
            if len(v) - len(pruned[l]) <= floors[l]:
                continue
            for i, x in enumerate(v):
                if i not in pruned[l] and (best is None or (x, l, i) < best):
                    best = (x, l, i)
        pruned[best[1]].add(best[2])
    return [pruned[l] for l in sorted(pruned)]


@pytest.mark.parametrize("amount", [0.05, 0.2, 0.3, 0.5, 0.8])
def test_global_exact_total_and_matches_brute_force(amount):
    g = torch.Generator().manual_seed(3)
    # different scales and spreads per layer
    scores = {0: torch.rand(20, generator=g, dtype=torch.float64) * 100,
              1: torch.rand(30, generator=g, dtype=torch.float64) ** 4,
              2: 1 + 0.1 * torch.rand(25, generator=g, dtype=torch.float64)}
    mask = allocate(scores, amount, "global")
    total = 75
    assert mask.n_pruned() == round(amount * total)
    floors = [max(1, math.ceil(0.05 * m)) for m in (20, 30, 25)]
    expect = _global_reference(scores, amount, floors)
    for l in range(3):
        assert _pruned_set(mask.intermediate[l]) == expect[l]
        assert mask.n_kept(l) >= floors[l]


def test_global_is_scale_invariant_per_layer():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(16, generator=g), torch.rand(16, generator=g)
    m1 = allocate({0: a, 1: b}, 0.4, "global")
    m2 = allocate({0: a * 1000, 1: b * 1e-3}, 0.4, "global")
    assert m1.intermediate[0].equal(m2.intermediate[0]) and m1.intermediate[1].equal(m2.intermediate[1])


def test_global_floor_respected():
    # Layer 0: one large score, the rest ~0 -> global would take all of it without a floor.
    s0 = torch.tensor([0.0] * 19 + [100.0], dtype=torch.float64)
    s1 = torch.linspace(1, 2, 20, dtype=torch.float64)
    mask = allocate({0: s0, 1: s1}, 0.5, "global", min_keep=5)
    assert mask.n_pruned() == 20
    assert mask.n_kept(0) == 5
    assert mask.pruned_indices(0).tolist() == list(range(15))
    default = allocate({0: s0, 1: s1}, 0.5, "global")
    # floor max(1, ceil(5% of 20)) = 1: the 19 zeros go, the large score stays
    assert default.n_kept(0) == 1 and default.intermediate[0][19]
    frac = allocate({0: s0, 1: s1}, 0.5, "global", min_keep=0.25)
    assert frac.n_kept(0) == 5
    with pytest.raises(ValueError, match="would prune all 20 neurons of layer 0"):
        allocate({0: torch.zeros(20), 1: s1}, 0.5, "global", min_keep=0)
    with pytest.raises(ValueError, match="leaves only"):
        allocate({0: s0, 1: s1}, 0.8, "global", min_keep=10)


def test_global_floor_rounding():
    scores = {0: torch.arange(1.0, 11.0), 1: torch.arange(1.0, 14.0)}
    assert allocate(scores, 0.29, "global", rounding="floor").n_pruned() == math.floor(0.29 * 23)
    assert allocate(scores, 0.3, "global", rounding="round").n_pruned() == round(0.3 * 23)


# ----------------------------------------------------------------------------- reference
def _torch_ln_structured(scores: torch.Tensor, amount, in_features=5) -> set[int]:
    """Rows zeroed by torch's ln_structured with the reference's importance matrix."""
    lin = nn.Linear(in_features, scores.numel())
    nn.init.constant_(lin.weight, 1.0)
    importance = scores.float().unsqueeze(1).repeat(1, in_features)
    prune.ln_structured(lin, name="weight", amount=amount, n=1, dim=0, importance_scores=importance)
    prune.remove(lin, "weight")
    return set((lin.weight.abs().sum(1) == 0).nonzero().flatten().tolist())


@pytest.mark.parametrize("amount", [0.1, 0.25, 0.3, 0.35, 0.5, 0.7])
def test_reference_local_equals_torch_ln_structured(amount):
    sizes = [10, 13, 20]
    scores = _rand_scores(sizes, seed=5, hidden=8)
    mask = allocate(scores, amount, "local", rounding="reference")
    for l in range(3):
        assert _pruned_set(mask.intermediate[l]) == _torch_ln_structured(scores.intermediate[l], amount)
        # paper mode: each layer's down rows are one more module
        assert _pruned_set(mask.hidden[l]) == _torch_ln_structured(scores.hidden[l], amount)


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("hidden", [None, 8])
def test_reference_global_equals_reference_pruner(amount, hidden):
    sizes = [10, 13, 20]
    scores = _rand_scores(sizes, seed=6, hidden=hidden)
    # The reference GlobalPruner: modules [up_0, down_0, up_1, ...], ceil threshold over all.
    modules = []
    for l in range(3):
        modules.append(scores.intermediate[l])
        if hidden:
            modules.append(scores.hidden[l])
    flat = torch.cat(modules)
    k = math.ceil(len(flat) * amount)
    flat_mask = torch.ones(len(flat))
    flat_mask[flat.argsort()[:k]] = 0
    mask = allocate(scores, amount, "global", rounding="reference")
    ours = []
    for l in range(3):
        ours.append(mask.intermediate[l])
        if hidden:
            ours.append(mask.hidden[l])
    pointer = 0
    for module_scores, keep in zip(modules, ours):
        n = module_scores.numel()
        count = int(n - torch.count_nonzero(flat_mask[pointer:pointer + n]))
        pointer += n
        assert _pruned_set(keep) == _torch_ln_structured(module_scores, count)
    n_pruned = mask.n_pruned() + mask.n_hidden_pruned()
    assert n_pruned == k


def test_reference_global_uses_ceil():
    scores = {0: torch.arange(1.0, 13.0), 1: torch.arange(1.0, 13.0)}
    # 24 * 0.3 = 7.2: the reference prunes ceil = 8, our "round" rule 7
    assert allocate(scores, 0.3, "global", rounding="reference").n_pruned() == 8
    assert allocate(scores, 0.3, "global", rounding="round").n_pruned() == 7


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5, float("nan"), "0.3", True])
def test_amount_errors(amount):
    # One rule: a wrong type ("0.3", a bool) is a TypeError, a wrong value a ValueError.
    expected = TypeError if isinstance(amount, (str, bool)) else ValueError
    with pytest.raises(expected) as err:
        allocate({0: torch.rand(4)}, amount)
    assert str(err.value) == f"`amount` must be a float in [0, 1); got {amount!r}"


def test_amount_message_template():
    with pytest.raises(ValueError, match=r"^`amount` must be a float in \[0, 1\); got 1.0$"):
        allocate({0: torch.rand(4)}, 1.0)


def test_unknown_allocation_and_rounding():
    with pytest.raises(ValueError,
                       match=r"`allocation` must be one of 'local', 'global', 'standardized'; got 'layerwise'"):
        allocate({0: torch.rand(4)}, 0.3, "layerwise")
    with pytest.raises(ValueError, match=r"`rounding` must be one of 'floor', 'round', 'reference'; got 'ceil'"):
        allocate({0: torch.rand(4)}, 0.3, rounding="ceil")
    with pytest.raises(ValueError, match="`min_keep` must be None"):
        allocate({0: torch.rand(4)}, 0.3, min_keep=-1)
    with pytest.raises(ValueError, match="`min_keep` must be None with rounding='reference'"):
        allocate({0: torch.rand(4)}, 0.3, "global", min_keep=1, rounding="reference")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_name_the_layer(bad):
    s = torch.rand(6, dtype=torch.float64)
    s[2] = bad
    with pytest.raises(ValueError, match=r"`scores.intermediate\[1\]` contains NaN or inf \(layer 1\)"):
        allocate({0: torch.rand(6), 1: s}, 0.3)
    scores = NeuronScores({0: torch.rand(6)}, {0: s}, "wpr", {})
    with pytest.raises(ValueError, match=r"`scores.hidden\[0\]` contains NaN or inf \(layer 0\)"):
        allocate(scores, 0.3, rounding="reference")


def test_damaged_or_hostile_mask_file_names_the_file(tmp_path):
    from safetensors.torch import save_file

    from llmrank_graph.errors import FileFormatError, OutputExistsError

    path = NeuronMask({0: torch.tensor([True, False])}).save(tmp_path / "mask.safetensors")
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        NeuronMask({0: torch.tensor([True, True])}).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="mask.safetensors' is not a readable NeuronMask file"):
        NeuronMask.load(path)
    # a well-formed file whose mask keeps no neuron of a layer
    save_file({"intermediate.0": torch.zeros(3, dtype=torch.bool)}, str(path),
              metadata={"format": "llmrank_graph.NeuronMask"})
    with pytest.raises(FileFormatError, match="mask.safetensors' holds an invalid NeuronMask: .*keeps no neuron"):
        NeuronMask.load(path)
