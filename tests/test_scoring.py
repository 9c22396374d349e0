"""Neuron scorers: reference reproductions against docs/design.md section 5 by hand, graph scorers
against the centrality code and networkx, baselines against their formulas, and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import tiny_llama  # noqa: E402

import llmrank_graph.scoring as scoring
from llmrank_graph import calibrate, export_graph, pagerank
from llmrank_graph.data.calibration import ActivationStats, ModuleStats
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.scoring import (
    PAGERANK_DEFAULTS,
    NeuronScores,
    Scorer,
    get_scorer,
    hidden_scorers,
    register_scorer,
    registry,
    score_neurons,
    scorers,
)

REFERENCE = ("wpr", "mpr", "channel-wanda", "norm")


# ----------------------------------------------------------------------------- fixtures
def _tiny_llama(seed=0, m=24, layers=3):
    return tiny_llama(seed=seed, layers=layers, d=16, m=m, vocab=64)


@pytest.fixture
def model():
    """Tiny llama with exact zeros: whole zero columns (colsum 0) and scattered zero entries."""
    mdl = _tiny_llama()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in mlp_layers(mdl):
            for which in ("up", "down", "gate"):
                w = m.weight(which)
                w[torch.rand(w.shape, generator=g) < 0.2] = 0.0
        layers = mlp_layers(mdl)
        layers[0].up.weight[:, 3] = 0.0      # hidden input 3 of up_0 has no edges
        layers[1].down.weight[:, 5] = 0.0    # intermediate neuron 5 of layer 1 feeds nothing
        layers[2].up.weight[:, 0] = 0.0
    return mdl


def _known_stats(model, seed=2):
    """Stats whose per-batch mean norms (a) differ from the all-token norms (b), both known."""
    rng = np.random.default_rng(seed)
    mods, known = {}, {}
    for m in mlp_layers(model):
        for name, which in ((m.gate_name, "gate"), (m.up_name, "up"), (m.down_name, "down")):
            out_f, in_f = m.weight(which).shape
            a_in, a_out = rng.uniform(0.1, 2.0, in_f), rng.uniform(0.1, 2.0, out_f)
            b_in, b_out = rng.uniform(0.1, 2.0, in_f), rng.uniform(0.1, 2.0, out_f)
            t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
            mods[name] = ModuleStats(t(b_in**2), t(b_out**2), t(3 * a_in), t(3 * a_out), n_batches=3, n_tokens=30)
            known[name] = {"a_in": a_in, "a_out": a_out, "b_in": b_in, "b_out": b_out}
    return ActivationStats(mods), known


@pytest.fixture
def stats(model):
    return _known_stats(model)


# ----------------------------------------------------------------------------- hand references
def _np(w):
    return w.detach().double().numpy()


def _hand_reference(model, known, method, mode, gamma=0.0, theta=0.5, p=1):
    """docs/design.md section 5 with plain loops: returns ({layer: up scores}, {layer: down scores})."""
    mlps = mlp_layers(model)
    seq = [[(m, "up", m.up_name), (m, "down", m.down_name)] for m in mlps]
    chains = [[x for pair in seq for x in pair]] if mode == "chained" else seq
    inter, hidden = {}, {}
    for chain in chains:
        prev = None
        for k, (m, which, name) in enumerate(chain):
            W = _np(m.weight(which))
            n_out, n_in = W.shape
            a_in, a_out = known[name]["a_in"], known[name]["a_out"]
            if k == 0:
                prev = a_in / a_in.sum()
            s = np.zeros(n_out)
            if method == "wpr":
                colW = [sum(abs(W[i, j]) for i in range(n_out)) for j in range(n_in)]
                colB = [sum(1.0 for i in range(n_out) if W[i, j] != 0) for j in range(n_in)]
                for i in range(n_out):
                    acc = 0.0
                    for j in range(n_in):
                        aw = abs(W[i, j]) / colW[j] if colW[j] != 0 else 0.0
                        ab = (1.0 if W[i, j] != 0 else 0.0) / colB[j] if colB[j] != 0 else 0.0
                        acc += (theta * aw + (1 - theta) * ab) * prev[j]
                    s[i] = gamma * acc + (1 - gamma) * a_out[i] / a_out.sum()
            elif method == "mpr":
                for i in range(n_out):
                    s[i] = sum(abs(W[i, j]) * prev[j] for j in range(n_in)) * a_out[i]
            elif method == "channel-wanda":
                for i in range(n_out):
                    s[i] = sum(abs(W[i, j]) * a_in[j] for j in range(n_in))
            elif method == "norm":
                for i in range(n_out):
                    s[i] = sum(abs(W[i, j]) ** p for j in range(n_in)) ** (1 / p)
            s = s / s.sum()
            (inter if which == "up" else hidden)[m.layer] = s
            prev = s
    return inter, hidden


def _assert_scores(got: dict, want: dict, rtol=1e-10):
    assert sorted(got) == sorted(want)
    for l in want:
        assert got[l].dtype == torch.float64
        np.testing.assert_allclose(got[l].numpy(), want[l], rtol=rtol, atol=1e-15)


# ----------------------------------------------------------------------------- reproductions
@pytest.mark.parametrize("mode", ["chained", "isolated"])
@pytest.mark.parametrize("gamma,theta", [(0.0, 0.5), (0.9, 0.5), (0.9, 0.0), (0.9, 1.0), (0.4, 0.3), (1.0, 0.7)])
def test_wpr_equals_design_formula(model, stats, mode, gamma, theta):
    st, known = stats
    want_i, want_h = _hand_reference(model, known, "wpr", mode, gamma, theta)
    res = score_neurons(model, st, "wpr", mode=mode, prune_hidden=True, gamma=gamma, theta=theta)
    assert isinstance(res, NeuronScores) and res.method == "wpr"
    assert res.params == {"gamma": gamma, "theta": theta, "mode": mode, "prune_hidden": True}
    _assert_scores(res.intermediate, want_i)
    _assert_scores(res.hidden, want_h)
    plain = score_neurons(model, st, "wpr", mode=mode, gamma=gamma, theta=theta)
    assert plain.hidden is None
    _assert_scores(plain.intermediate, want_i)


def test_wpr_defaults_are_reference_defaults_and_rank_by_activation(model, stats):
    st, known = stats
    res = score_neurons(model, st, "wpr")
    assert res.params["gamma"] == 0.0 and res.params["theta"] == 0.5 and res.params["mode"] == "chained"
    for m in mlp_layers(model):  # gamma = 0: out_activation of up_l, normalised
        a = known[m.up_name]["a_out"]
        np.testing.assert_allclose(res.intermediate[m.layer].numpy(), a / a.sum(), rtol=1e-12)


def test_wpr_modes_differ_when_propagating(model, stats):
    st, _ = stats
    ch = score_neurons(model, st, "wpr", mode="chained", gamma=0.9)
    iso = score_neurons(model, st, "wpr", mode="isolated", gamma=0.9)
    torch.testing.assert_close(ch.intermediate[0], iso.intermediate[0])  # same start for layer 0
    assert not torch.allclose(ch.intermediate[1], iso.intermediate[1])


@pytest.mark.parametrize("mode", ["chained", "isolated"])
@pytest.mark.parametrize("method", ["mpr", "channel-wanda", "norm"])
def test_other_reference_scorers_equal_design_formula(model, stats, mode, method):
    st, known = stats
    want_i, want_h = _hand_reference(model, known, method, mode)
    res = score_neurons(model, st, method, mode=mode, prune_hidden=True)
    _assert_scores(res.intermediate, want_i)
    _assert_scores(res.hidden, want_h)
    assert res.hidden[0].shape == (16,) and res.intermediate[0].shape == (24,)


def test_mpr_modes_differ(model, stats):
    st, _ = stats
    ch = score_neurons(model, st, "mpr", mode="chained")
    iso = score_neurons(model, st, "mpr", mode="isolated")
    assert not torch.allclose(ch.intermediate[2], iso.intermediate[2])


def test_norm_l2_and_weight_only(model, stats):
    st, known = stats
    want_i, want_h = _hand_reference(model, known, "norm", "chained", p=2)
    res = score_neurons(model, None, "norm", p=2, prune_hidden=True)  # no stats needed
    _assert_scores(res.intermediate, want_i)
    _assert_scores(res.hidden, want_h)


def test_reference_with_real_calibration(model):
    ids = torch.randint(0, 64, (6, 8), generator=torch.Generator().manual_seed(0))
    st = calibrate(model, input_ids=ids, batch_size=2)  # 3 batches: batch mean != all-token norm
    known = {name: {"a_in": s.input_norm_batch_mean.numpy(), "a_out": s.output_norm_batch_mean.numpy()}
             for name, s in st.items()}
    name = mlp_layers(model)[0].down_name
    assert not np.allclose(st[name].input_norm_batch_mean.numpy(), st[name].input_norm.numpy())
    for method, kw in (("wpr", {"gamma": 0.9, "theta": 0.3}), ("mpr", {}), ("channel-wanda", {})):
        for mode in ("chained", "isolated"):
            want_i, want_h = _hand_reference(model, known, method, mode, **kw)
            res = score_neurons(model, st, method, mode=mode, prune_hidden=True, **kw)
            _assert_scores(res.intermediate, want_i, rtol=1e-9)
            _assert_scores(res.hidden, want_h, rtol=1e-9)
    act = score_neurons(model, st, "activation")
    for m in mlp_layers(model):
        torch.testing.assert_close(act.intermediate[m.layer], st[m.down_name].input_norm)


def test_every_scorer_runs_on_real_stats(model):
    st = calibrate(model, input_ids=torch.randint(0, 64, (4, 8)), batch_size=2,
                   second_moments=True, gradients=True)  # obs and taylor need them
    for name in scorers():
        res = score_neurons(model, st, name)
        assert res.method == name
        assert res.sizes() == {0: 24, 1: 24, 2: 24}
        assert all(torch.isfinite(s).all() for s in res.intermediate.values())


# ----------------------------------------------------------------------------- graph scorers
def test_pagerank_defaults():
    assert PAGERANK_DEFAULTS == {"mode": "chained", "gate": "up", "residual": 0.0, "weighting": "activation_share",
                                 "keep": None, "direction": "reverse", "personalization": "activation",
                                 "alpha": 0.85, "backend": "auto"}
    params = get_scorer("pagerank").get_params()
    assert {k: params[k] for k in PAGERANK_DEFAULTS} == PAGERANK_DEFAULTS


_GRAPH_KEYS = ("mode", "gate", "residual", "weighting", "keep")


@pytest.mark.parametrize("opts", [
    {},
    {"mode": "isolated"},
    {"direction": "forward", "weighting": "abs", "personalization": "uniform", "alpha": 0.85},
    {"gate": "sum", "residual": 0.3, "alpha": 0.7},
    {"gate": "max", "keep": 5, "backend": "scipy", "direction": "forward"},
])
def test_pagerank_scorer_is_intermediate_slice(model, stats, opts):
    st, _ = stats
    full = {**PAGERANK_DEFAULTS, **opts}
    g = export_graph(model, st, **{k: full[k] for k in _GRAPH_KEYS})
    pr = pagerank(g, **{k: full[k] for k in ("alpha", "personalization", "direction", "backend")})
    mode = opts.pop("mode", "chained")
    res = score_neurons(model, st, "pagerank", mode=mode, **opts)
    want = {p.layer: pr.scores[p.offset:p.stop] for p in g.partitions if p.kind == "intermediate"}
    _assert_scores(res.intermediate, want, rtol=1e-8)
    assert res.hidden is None


def test_pagerank_scorer_matches_networkx(model, stats):
    nx = pytest.importorskip("networkx")
    st, _ = stats
    g = export_graph(model, st, weighting=PAGERANK_DEFAULTS["weighting"])
    e = g.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(g.n_nodes))
    # reverse direction: every edge reversed
    G.add_weighted_edges_from(zip(e["dst"].tolist(), e["src"].tolist(), e["weight"].astype(float).tolist()))
    act = g.activation
    want = nx.pagerank(G, alpha=PAGERANK_DEFAULTS["alpha"], personalization={v: act[v] for v in range(g.n_nodes)},
                       weight="weight", tol=1e-13, max_iter=10_000)
    res = score_neurons(model, st, "pagerank")  # the defaults: reverse, activation share, activation teleport
    for p in g.intermediate_partitions():
        np.testing.assert_allclose(res.intermediate[p.layer].numpy(),
                                   [want[v] for v in range(p.offset, p.stop)], rtol=1e-5)


def test_pagerank_weight_only_without_stats(model):
    res = score_neurons(model, None, "pagerank", weighting="abs", personalization="uniform", direction="forward")
    g = export_graph(model)
    pr = pagerank(g, alpha=PAGERANK_DEFAULTS["alpha"], direction="forward")
    _assert_scores(res.intermediate, {p.layer: pr.scores[p.offset:p.stop] for p in g.intermediate_partitions()},
                   rtol=1e-8)


def test_pagerank_with_given_graph(model, stats, tmp_path):
    st, _ = stats
    fresh = score_neurons(model, st, "pagerank")
    g = export_graph(model, st, weighting=PAGERANK_DEFAULTS["weighting"])
    given = score_neurons(model, None, "pagerank", graph=g)  # the graph carries weights and activations
    _assert_scores(given.intermediate, {l: t.numpy() for l, t in fresh.intermediate.items()}, rtol=1e-12)
    assert isinstance(given.params["graph"], str)  # no graph object kept in the result
    from llmrank_graph import read_graph

    g.to_parquet(tmp_path / "g")
    from_disk = score_neurons(model, None, "pagerank", graph=read_graph(tmp_path / "g"))
    _assert_scores(from_disk.intermediate, {l: t.numpy() for l, t in fresh.intermediate.items()}, rtol=1e-5)
    with pytest.raises(ValueError, match=r"`graph` was exported with weighting='abs' but scorer 'pagerank' has "
                                         r"weighting='activation_share'"):
        score_neurons(model, st, "pagerank", graph=export_graph(model, st, weighting="abs"))
    with pytest.raises(ValueError, match="`graph` does not match `model`"):
        score_neurons(model, st, "pagerank", graph=export_graph(_tiny_llama(m=20), weighting="abs"), weighting="abs")
    with pytest.raises(TypeError, match="`graph` must be an MLPGraph"):
        get_scorer("pagerank", graph="g")


def test_every_other_centrality_has_an_explicit_scorer_class():
    import inspect

    from llmrank_graph import centrality

    names = [c["name"] for c in centrality.centralities() if c["name"] != "pagerank"]
    assert names
    for algo in names:
        cls = scoring.scorer_class(algo)
        # Written out in scoring.py (a class built with type() has no source to find).
        assert "class " + cls.__name__ in inspect.getsource(cls)
        assert getattr(scoring, cls.__name__) is cls and cls.name == algo


@pytest.mark.parametrize("algo,kw", [
    ("katz", {"alpha": 0.05, "direction": "reverse"}),
    ("hits", {"which": "hubs"}),
    ("hits", {}),
    ("eigenvector", {}),
    ("strength", {"direction": "out", "weighting": "abs_x_input"}),
    ("degree", {"keep": 3}),
])
def test_centrality_scorers_are_intermediate_slices(model, stats, algo, kw):
    from llmrank_graph import centrality

    if algo not in scorers():
        pytest.skip(f"llmrank_graph.centrality has no {algo}")
    st, _ = stats
    graph_kw = {k: kw[k] for k in ("weighting", "keep") if k in kw}
    g = export_graph(model, st, **{"weighting": "abs", **graph_kw})  # the other centralities' graph
    want = getattr(centrality, algo)(g, **{k: v for k, v in kw.items() if k not in graph_kw}).scores
    res = score_neurons(model, st, algo, **kw)
    assert res.method == algo
    _assert_scores(res.intermediate, {p.layer: want[p.offset:p.stop] for p in g.intermediate_partitions()},
                   rtol=1e-8)


@pytest.mark.parametrize("algo", ["katz", "hits", "eigenvector", "strength", "degree"])
def test_centrality_scorer_parameters(algo):
    """Each explicit graph scorer: the graph options with the plain export's defaults, then the
    parameters of its centrality with that function's defaults, then graph, prune_hidden and attention."""
    import inspect

    from llmrank_graph import centrality
    from llmrank_graph.graph.mlpgraph import DEFAULT_EXPORT

    fn = getattr(centrality, algo)
    own = {k: p.default for k, p in list(inspect.signature(fn).parameters.items())[1:]}
    params = get_scorer(algo).get_params()
    assert list(params) == [*DEFAULT_EXPORT.as_dict(), *own, "graph", "prune_hidden", "attention"]
    assert params == {**DEFAULT_EXPORT.as_dict(), **own, "graph": None, "prune_hidden": False, "attention": False}
    assert type(get_scorer(algo)).__name__ == f"{algo.capitalize()}Scorer"


def test_centrality_scorer_classes(model, stats):
    """Katz and HITS run their centrality on the scorer's graph; errors name what was wrong."""
    from llmrank_graph import centrality

    st, _ = stats
    res = get_scorer("katz", alpha=0.05, direction="reverse", weighting="abs_x_input", mode="isolated").score(model, st)
    g = export_graph(model, st, weighting="abs_x_input", mode="isolated")
    want = centrality.katz(g, alpha=0.05, direction="reverse")
    _assert_scores(res.intermediate, {p.layer: want.scores[p.offset:p.stop] for p in g.intermediate_partitions()},
                   rtol=1e-12)
    assert res.method == "katz" and res.params["alpha"] == 0.05
    given = get_scorer("katz", alpha=0.05, direction="reverse", weighting="abs_x_input", mode="isolated",
                       graph=g).score(model, None)
    _assert_scores(given.intermediate, {l: t.numpy() for l, t in res.intermediate.items()}, rtol=1e-12)
    with pytest.raises(TypeError, match=r"'gamma'.*'alpha', 'beta'"):
        get_scorer("katz", gamma=1.0)
    with pytest.raises(ValueError, match="`stats` are required"):
        get_scorer("katz", weighting="abs_x_input").score(model, None)
    with pytest.raises(ValueError, match="`prune_hidden=True`"):
        get_scorer("katz", prune_hidden=True)
    with pytest.raises(ValueError, match="`direction` must be one of 'forward', 'reverse'; got 'in'"):
        get_scorer("katz", direction="in")

    g = export_graph(model)
    for which in ("hubs", "authorities"):
        got = get_scorer("hits", which=which).score(model, None)  # weight-only: no stats needed
        want = centrality.hits(g, which=which)
        _assert_scores(got.intermediate, {p.layer: want.scores[p.offset:p.stop] for p in g.intermediate_partitions()})
    assert get_scorer("hits").which == "authorities"
    with pytest.raises(ValueError, match="`which` must be one of"):
        get_scorer("hits", which="x").score(model, None)


def test_rounding_is_an_attribute_of_the_scorer():
    for name in scorers():
        assert type(get_scorer(name)).rounding == ("reference" if name in REFERENCE else "round")


def test_pagerank_defaults_are_one_export_options_and_the_centrality_options():
    from llmrank_graph.graph.mlpgraph import ExportOptions

    assert isinstance(scoring.PAGERANK_EXPORT, ExportOptions)
    assert PAGERANK_DEFAULTS == {**scoring.PAGERANK_EXPORT.as_dict(), **scoring.PAGERANK_CENTRALITY}
    assert get_scorer("pagerank").export_options == scoring.PAGERANK_EXPORT


# ----------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("which", ["up", "gate", "down"])
@pytest.mark.parametrize("ord_", [1, 2])
def test_magnitude_equals_hand(model, which, ord_):
    res = score_neurons(model, None, "magnitude", which=which, ord=ord_)
    for m in mlp_layers(model):
        W = _np(m.weight(which))
        if which == "down":  # (d, m): column j
            want = [sum(abs(W[i, j]) ** ord_ for i in range(W.shape[0])) ** (1 / ord_) for j in range(W.shape[1])]
        else:  # (m, d): row j
            want = [sum(abs(W[j, i]) ** ord_ for i in range(W.shape[1])) ** (1 / ord_) for j in range(W.shape[0])]
        np.testing.assert_allclose(res.intermediate[m.layer].numpy(), want, rtol=1e-12)


def test_magnitude_gpt2_conv1d_layout(tiny_gpt2):
    res = score_neurons(tiny_gpt2, None, "magnitude", which="down", ord=1)
    for l, block in enumerate(tiny_gpt2.transformer.h):
        w = _np(block.mlp.c_proj.weight)  # Conv1D stores (in = m, out = d): neuron j is row j
        np.testing.assert_allclose(res.intermediate[l].numpy(), np.abs(w).sum(1), rtol=1e-12)
    with pytest.raises(ValueError, match="`which='gate'` needs a gated MLP"):
        score_neurons(tiny_gpt2, None, "magnitude", which="gate")


def test_activation_and_wanda_sp_equal_hand(model, stats):
    st, known = stats
    act = score_neurons(model, st, "activation")
    wsp = score_neurons(model, st, "wanda-sp")
    for m in mlp_layers(model):
        b = known[m.down_name]["b_in"]  # all-token L2 norm of the intermediate activations
        np.testing.assert_allclose(act.intermediate[m.layer].numpy(), b, rtol=1e-12)
        W = _np(m.weight("down"))
        want = [sum(abs(W[i, j]) * b[j] for i in range(W.shape[0])) for j in range(W.shape[1])]
        np.testing.assert_allclose(wsp.intermediate[m.layer].numpy(), want, rtol=1e-12)
    assert wsp.intermediate[1][5] == 0.0  # neuron 5 of layer 1 feeds nothing


def test_random_is_seeded(model):
    a = score_neurons(model, None, "random", seed=3)
    b = score_neurons(model, None, "random", seed=3)
    c = score_neurons(model, None, "random", seed=4)
    for l in a.intermediate:
        assert torch.equal(a.intermediate[l], b.intermediate[l])
        assert not torch.equal(a.intermediate[l], c.intermediate[l])
        assert ((a.intermediate[l] >= 0) & (a.intermediate[l] < 1)).all()
    assert not torch.equal(a.intermediate[0], a.intermediate[1])  # layers draw different numbers


# ----------------------------------------------------------------------------- registry
def test_registry_lists_all_methods():
    names = scorers()
    for n in ("pagerank", "wpr", "mpr", "channel-wanda", "norm", "magnitude", "activation", "wanda-sp", "random"):
        assert n in names
    assert set(hidden_scorers()) == set(REFERENCE)


def test_unknown_method_lists_registry(model):
    with pytest.raises(ValueError) as e:
        score_neurons(model, None, "pagerankk")
    msg = str(e.value)
    assert "`method`" in msg and "'pagerankk'" in msg
    for n in scorers():
        assert repr(n) in msg


def test_unknown_param_names_it_and_allowed(model):
    with pytest.raises(TypeError, match=r"'gama'.*'gamma', 'theta', 'mode', 'prune_hidden'"):
        get_scorer("wpr", gama=0.5)
    with pytest.raises(TypeError, match="'seed'"):
        score_neurons(model, None, "magnitude", seed=1)


def test_register_custom_scorer(model):
    class Ones(Scorer):
        name = "ones-test"

        def __init__(self, *, mode="chained", prune_hidden=False):
            self.mode, self.prune_hidden = mode, prune_hidden
            self._validate_common()

        def needs_stats(self):
            return False

        def _score(self, model, mlps, stats):
            return {m.layer: torch.ones(m.intermediate_size) for m in mlps}, None

    try:
        assert register_scorer(Ones) is Ones
        assert "ones-test" in scorers()
        res = score_neurons(model, None, "ones-test")
        assert torch.equal(res.intermediate[2], torch.ones(24, dtype=torch.float64))
    finally:
        registry._REGISTRY.pop("ones-test", None)
    with pytest.raises(TypeError, match="`cls` must be a Scorer subclass"):
        register_scorer(int)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("method", ["wpr", "mpr", "channel-wanda", "activation", "wanda-sp", "pagerank"])
def test_missing_stats(model, method):
    with pytest.raises(ValueError, match=rf"`stats` are required by scorer '{method}'"):
        score_neurons(model, None, method)


def test_stats_from_another_model(model):
    other = _tiny_llama(m=20)
    st = calibrate(other, input_ids=torch.randint(0, 64, (2, 8)))
    for method in ("wpr", "activation", "magnitude", "pagerank"):
        with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj.*\(16, 24\).*\(16, 20\)"):
            score_neurons(model, st, method)


def test_stats_wrong_type(model):
    with pytest.raises(TypeError, match="`stats` must be an ActivationStats"):
        score_neurons(model, {"x": 1}, "activation")


@pytest.mark.parametrize("method", ["magnitude", "wpr", "pagerank", "random"])
def test_nan_in_weights(stats, method):
    st, _ = stats
    mdl = _tiny_llama()
    with torch.no_grad():
        mlp_layers(mdl)[1].down.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or inf in model\.layers\.1\.mlp\.down_proj\.weight "
                                         r"\(the down weight of layer 1\)"):
        score_neurons(mdl, st, method)


@pytest.mark.parametrize("field_", ["input_sumsq", "output_batch_norm_sum"])
def test_nan_in_stats(model, stats, field_):
    st, _ = stats
    name = mlp_layers(model)[2].up_name
    getattr(st[name], field_)[1] = float("nan")
    with pytest.raises(ValueError, match=rf"`stats` for module '{name}' contain NaN or inf"):
        score_neurons(model, st, "wpr")


@pytest.mark.parametrize("method", ["pagerank", "magnitude", "activation", "wanda-sp", "random"])
def test_prune_hidden_unsupported(model, stats, method):
    with pytest.raises(ValueError, match=r"`prune_hidden=True`.*'wpr', 'mpr', 'channel-wanda', 'norm'"):
        score_neurons(model, stats[0], method, prune_hidden=True)


@pytest.mark.parametrize("method,kw,msg", [
    ("wpr", {"gamma": 1.5}, r"`gamma` must be a float in \[0, 1\]; got 1.5"),
    ("wpr", {"gamma": -0.1}, r"`gamma` must be a float in \[0, 1\]; got -0.1"),
    ("wpr", {"theta": 2}, r"`theta` must be a float in \[0, 1\]; got 2"),
    ("pagerank", {"alpha": 1.0}, r"`alpha` must be a float in \(0, 1\); got 1.0"),
    ("pagerank", {"alpha": 0}, r"`alpha` must be a float in \(0, 1\); got 0"),
    ("pagerank", {"direction": "up"}, r"`direction` must be one of 'forward', 'reverse'; got 'up'"),
    ("pagerank", {"gate": "min"}, r"`gate` must be one of 'up', 'gate', 'sum', 'max'; got 'min'"),
    ("pagerank", {"weighting": "x"}, r"`weighting` must be one of 'abs', 'abs_x_input', 'activation_share'; got 'x'"),
    ("pagerank", {"residual": -1.0}, r"`residual` must be a finite float >= 0; got -1.0"),
    ("pagerank", {"keep": 0}, r"`keep` must be"),
    ("pagerank", {"backend": "nope"}, r"`backend` must be one of 'auto', .*'scipy'.*; got 'nope'"),
    ("pagerank", {"mode": "stacked"}, r"`mode` must be one of 'chained', 'isolated'; got 'stacked'"),
    ("magnitude", {"which": "fc"}, r"`which` must be one of 'up', 'gate', 'down'; got 'fc'"),
    ("magnitude", {"ord": 3}, r"`ord` must be one of 1, 2; got 3"),
    ("norm", {"p": 0}, r"`p` must be one of 1, 2; got 0"),
    ("random", {"seed": -1}, r"`seed` must be a non-negative int; got -1"),
])
def test_bad_params(method, kw, msg):
    with pytest.raises(ValueError, match=msg):
        get_scorer(method, **kw)


@pytest.mark.parametrize("method,kw,msg", [
    ("wpr", {"theta": True}, r"`theta` must be a float in \[0, 1\]; got True"),
    ("random", {"seed": 1.5}, r"`seed` must be a non-negative int; got 1.5"),
    ("mpr", {"prune_hidden": "yes"}, r"`prune_hidden` must be a bool; got 'yes'"),
])
def test_bad_param_types(method, kw, msg):
    """A value of the wrong type is a TypeError (one rule for every check)."""
    with pytest.raises(TypeError, match=msg):
        get_scorer(method, **kw)


def test_zero_activations_error(model, stats):
    st, _ = stats
    name = mlp_layers(model)[0].up_name
    st[name].output_batch_norm_sum.zero_()
    with pytest.raises(ValueError, match=r"sum to 0"):
        score_neurons(model, st, "mpr")


# ----------------------------------------------------------------------------- parameters (scikit-learn manners)
def test_every_builtin_scorer_declares_a_constraint_per_parameter():
    for name in scorers():
        cls = scoring.scorer_class(name)
        assert set(cls._parameter_constraints) == set(cls.param_names()), name


def test_init_only_stores_and_the_entry_checks(model, stats):
    st, _ = stats
    bad = scoring.WeightedPageRankScorer(gamma=2)  # no check here
    assert bad.get_params()["gamma"] == 2
    with pytest.raises(ValueError, match=r"`gamma` must be a float in \[0, 1\]; got 2"):
        bad.score(model, st)
    mag = scoring.MagnitudeScorer(ord=3)
    with pytest.raises(ValueError, match="`ord` must be one of 1, 2; got 3"):
        mag.score_layer(mlp_layers(model)[0], None)
    with pytest.raises(ValueError, match=r"`prune_hidden=True` needs scores of the hidden channels"):
        scoring.PageRankScorer(prune_hidden=True).score(model, st)


def test_set_params_returns_the_scorer_and_refuses_unknown_names(model, stats):
    st, _ = stats
    s = get_scorer("wpr")
    assert s.set_params(gamma=0.9, mode="isolated") is s
    assert s.get_params() == {"gamma": 0.9, "theta": 0.5, "mode": "isolated", "prune_hidden": False}
    torch.testing.assert_close(s.score(model, st).intermediate[1],
                               score_neurons(model, st, "wpr", gamma=0.9, mode="isolated").intermediate[1])
    with pytest.raises(TypeError, match=r"scorer 'wpr' got unknown parameter\(s\) 'gama'; its parameters are "
                                        r"'gamma', 'theta', 'mode', 'prune_hidden'"):
        s.set_params(gama=0.1)
    s.set_params(theta=-1)  # checked when it next runs
    with pytest.raises(ValueError, match=r"`theta` must be a float in \[0, 1\]; got -1"):
        s.score(model, st)


@pytest.mark.parametrize("name, params", [
    ("wpr", {"gamma": 2}), ("wpr", {"theta": "x"}), ("wpr", {"gama": 0.5}), ("norm", {"p": 3}),
    ("magnitude", {"which": "left"}), ("magnitude", {"ord": 1.5}), ("random", {"seed": -1}),
    ("random", {"seed": 1.0}), ("obs", {"ridge": 0}), ("mpr", {"mode": "stacked"}),
    ("activation", {"prune_hidden": True}), ("wpr", {"prune_hidden": 1}),
    ("pagerank", {"alpha": 1.0}), ("pagerank", {"direction": "in"}), ("pagerank", {"personalization": "x"}),
    ("pagerank", {"gate": "min"}), ("pagerank", {"residual": -1}), ("pagerank", {"keep": 0}),
    ("pagerank", {"weighting": "w"}), ("pagerank", {"backend": "nope"}), ("pagerank", {"graph": "g"}),
    ("pagerank", {"tol": 0}), ("pagerank", {"max_iter": 0}), ("katz", {"alpha": -1}), ("katz", {"beta": 0}),
    ("katz", {"normalized": "yes"}), ("hits", {"which": "x"}), ("eigenvector", {"directed": None}),
    ("strength", {"direction": "forward"}), ("degree", {"direction": "forward"}), ("katz", {"gamma": 1.0}),
])
def test_check_params_refuses_what_get_scorer_refuses(name, params):
    cls = scoring.scorer_class(name)
    with pytest.raises((TypeError, ValueError)) as built:
        get_scorer(name, **params)
    with pytest.raises(type(built.value)) as checked:
        cls.check_params(**params)
    assert str(checked.value) == str(built.value)


def test_check_params_returns_the_values_normalised():
    assert scoring.WeightedPageRankScorer.check_params(gamma=1, theta=np.float32(0.25)) == {"gamma": 1.0,
                                                                                            "theta": 0.25}
    assert scoring.RandomScorer.check_params(seed=np.int64(3)) == {"seed": 3}
    assert type(scoring.RandomScorer.check_params(seed=np.int64(3))["seed"]) is int
    pers = np.ones(5)
    assert scoring.PageRankScorer.check_params(personalization=pers)["personalization"] is pers  # checked on the graph


def test_registry_is_complete_when_only_the_registry_module_is_imported():
    import subprocess
    import sys

    code = "import llmrank_graph.scoring.registry as r; print(','.join(r.scorers()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(",") == ["pagerank", "wpr", "mpr", "channel-wanda", "norm", "magnitude", "activation",
                              "wanda-sp", "random", "flap", "obs", "katz", "hits", "eigenvector", "strength",
                              "degree", "taylor", "influence"]


def test_score_neurons_checks_the_parameters_once(model, monkeypatch):
    calls = []
    real = registry.validate
    monkeypatch.setattr(registry, "validate", lambda *a, **k: calls.append(a) or real(*a, **k))
    score_neurons(model, None, "magnitude", which="down")
    assert len(calls) == 1


@pytest.mark.parametrize("method, kw", [
    ("wpr", {"gamma": 0.5}), ("magnitude", {}), ("pagerank", {}), ("katz", {"weighting": "abs_x_input"}),
    ("pagerank", {"given": True}), ("obs", {}),
])
def test_weights_are_scanned_once_per_call(model, method, kw, monkeypatch):
    st = calibrate(model, input_ids=torch.randint(0, 64, (2, 8)), second_moments=True)
    if kw.pop("given", False):
        kw["graph"] = export_graph(model, st, weighting=PAGERANK_DEFAULTS["weighting"])
    weights = {id(p): n for n, p in model.named_parameters() if ".mlp." in n}
    scans: dict[str, int] = {}
    real = torch.isfinite

    def counting(t, *a, **k):
        if id(t) in weights:
            scans[weights[id(t)]] = scans.get(weights[id(t)], 0) + 1
        return real(t, *a, **k)

    monkeypatch.setattr(torch, "isfinite", counting)
    score_neurons(model, st, method, **kw)
    assert scans and set(scans.values()) == {1}, scans
    scans.clear()
    score_neurons(model, st, method, check_input=False, **kw)  # the caller has just scanned them
    assert set(scans.values()) <= {1} and (not scans or method in ("pagerank", "katz")), scans
