"""Zero-cost proxies (gtn_nas.search.zero_cost): each score against its definition written out by
hand, the genotype's own network against the one-hot supernet, and `gtn-nas search` without a GTN
(--arch-file, one leaderboard column per proxy) followed by `gtn-nas rank --truth nb201`."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from typer.testing import CliRunner

import cli
from gtn_nas.search.store import DEGENERATE
from gtn_nas.search.zero_cost import (ZERO_COST, ZeroCostScorer, feature_maps, grad_norm_score,
                                      jacov_score, meco_map, meco_score, naswot_kernel,
                                      naswot_score, snip_score, zico_score)
from search_spaces import nb201

runner = CliRunner()
GENOTYPES = ("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
             "|avg_pool_3x3~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|")


def test_naswot_kernel_is_the_hamming_similarity_summed_over_relus():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
    k = naswot_kernel([(a, 1.0), (b, 1.0), (a, 1.0), (b, 0.0)])  # a read by two ReLUs, b by one

    def by_hand(x):
        c = (np.asarray(x).reshape(5, -1) > 0).astype(np.float64)
        return c @ c.T + (1 - c) @ (1 - c).T

    np.testing.assert_array_equal(np.asarray(k), 2 * by_hand(a) + by_hand(b))
    sign, logdet = np.linalg.slogdet(2 * by_hand(a) + by_hand(b))
    assert naswot_score(k) == pytest.approx(logdet) and sign > 0
    assert naswot_score(np.ones((3, 3))) == DEGENERATE  # identical codes: singular K


def test_jacov_score_by_hand_and_degenerate():
    rng = np.random.default_rng(1)
    j = rng.normal(size=(4, 10))
    lam = np.linalg.eigvalsh(np.corrcoef(j))
    assert jacov_score(j) == pytest.approx(-np.sum(np.log(lam + 1e-5) + 1 / (lam + 1e-5)))
    assert jacov_score(np.zeros((4, 10))) == DEGENERATE  # the output ignores the input


def test_snip_and_grad_norm_count_kernels_only():
    params = {"conv": {"kernel": jnp.array([[1.0, -2.0]])}, "bn": {"scale": jnp.array([5.0])},
              "dense": {"kernel": jnp.array([3.0]), "bias": jnp.array([7.0])}}
    grads = {"conv": {"kernel": jnp.array([[0.5, 0.25]])}, "bn": {"scale": jnp.array([9.0])},
             "dense": {"kernel": jnp.array([-4.0]), "bias": jnp.array([9.0])}}
    assert float(snip_score(params, grads)) == pytest.approx(0.5 + 0.5 + 12.0)
    assert float(grad_norm_score(grads)) == pytest.approx(np.hypot(0.5, 0.25) + 4.0)


@pytest.fixture(scope="module")
def scorer():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 40)
    return ZeroCostScorer(4, 1, 10, (16, 16, 3), images, labels, (0.5,) * 3, (0.25,) * 3, 8,
                          jax.random.PRNGKey(3))


@pytest.mark.parametrize("genotype", GENOTYPES)
def test_exact_network_scores_equal_the_one_hot_supernets(scorer, genotype):
    """The eager exact network against the same proxies on the supernet (every op computed,
    unused ones weighted 0, their ReLUs counted 0): the same init key gives the same weights."""
    g = nb201.NB201Genotype.from_str(genotype)
    key = jax.random.PRNGKey(4)
    got = scorer.score(g, key, ["naswot", "jacov", "snip", "grad_norm", "synflow"])
    kw = dict(channels=4, cells=1, num_classes=10, input_shape=(16, 16, 3), activation="relu")
    net = nb201.build_shared(**kw, layers="benchmark")
    net_nobn = nb201.build_shared(**kw, layers="benchmark_nobn")
    arch = jnp.asarray(nb201.encode(g))
    v = net.init(key, scorer.x[:2], arch, train=True)
    raw = scorer.batch_scores(net, v["params"], v["batch_stats"], arch)
    with jax.enable_x64(True):
        syn = float(scorer.synflow(net_nobn, v["params"], arch))
    want = {"naswot": naswot_score(raw["naswot"]), "jacov": jacov_score(raw["jacov"]),
            "snip": float(raw["snip"]), "grad_norm": float(raw["grad_norm"]), "synflow": syn}
    for proxy in want:
        assert got[proxy][0] == pytest.approx(want[proxy], rel=2e-4), proxy
        assert got[proxy][1] >= 0.0


def test_a_pass_shared_by_several_proxies_gives_each_what_it_gives_alone(scorer):
    g = nb201.NB201Genotype.from_str(GENOTYPES[1])
    key = jax.random.PRNGKey(6)
    together = scorer.score(g, key, ["jacov", "snip", "grad_norm"])
    for proxy in ("jacov", "snip", "grad_norm"):
        alone = scorer.score(g, key, [proxy])[proxy][0]
        assert together[proxy][0] == pytest.approx(alone, rel=1e-6), proxy


def test_synflow_float32_agrees_with_float64_at_small_depth(scorer):
    g = nb201.NB201Genotype.from_str(GENOTYPES[0])
    f32 = ZeroCostScorer(4, 1, 10, (16, 16, 3), np.zeros((8, 16, 16, 3), np.uint8), np.arange(8),
                         (0.5,) * 3, (0.25,) * 3, 8, jax.random.PRNGKey(3), synflow_dtype="float32")
    key = jax.random.PRNGKey(5)
    a = scorer.score(g, key, ["synflow"])["synflow"][0]
    b = f32.score(g, key, ["synflow"])["synflow"][0]
    assert a > 0 and b == pytest.approx(a, rel=1e-4)


def test_zero_cost_search_without_gtn_then_rank_against_nb201(tmp_path, shared_data):
    """The interface of issue #22 at a tiny size: no --gtn, --arch-file, one column per proxy,
    then the NB201 table as the truth with top-10% overlap and best-of-N."""
    if not any((shared_data / "cifar10").glob("*.tar*")):
        pytest.skip("no CIFAR-10 in the reference data")
    archs = tmp_path / "archs.txt"
    archs.write_text("# two cells and a blank line\n" + GENOTYPES[0] + "\n\n" + GENOTYPES[1]
                     + "\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    out = tmp_path / "zc"
    proxies = "params,flops,synflow,naswot,jacov,snip,grad_norm,meco,zico,vote"
    r = runner.invoke(cli.app, ["search", "--space", "nb201", "--dataset", "cifar10",
                                "--data-dir", str(shared_data), "--arch-file", str(archs),
                                "--proxy", proxies, "--vote", "naswot,meco,zico",
                                "--channels", "4", "--cells", "1",
                                "--zc-batch-size", "8", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for p in proxies.split(","):
        assert p in rows[0] and all(row[p] != "" for row in rows), p
    empty = next(row for row in rows if "nor_conv" not in row["arch"])
    assert float(empty["naswot"]) == DEGENERATE and float(empty["synflow"]) == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gtn_run"] is None and summary["channels"] == 4
    assert summary["vote"] == ["naswot", "meco", "zico"]
    assert float(empty["vote"]) < min(float(r["vote"]) for r in rows if r is not empty)

    r = runner.invoke(cli.app, ["rank", str(out), "--truth", "nb201", "--data-dir",
                                str(shared_data), "--quiet"])
    assert r.exit_code == 0, r.output
    ranked = json.loads((out / "rank.json").read_text())["proxies"]
    assert set(ranked) == set(proxies.split(","))
    assert ranked["synflow"]["n"] == 3 and ranked["synflow"]["top10_k"] == 1
    assert ranked["synflow"]["best_of_10"] is None  # n < 10


@pytest.mark.parametrize("args, message", [
    (["--proxy", "synflow", "--budget", "2"], "give --dataset"),
    (["--proxy", "real", "--dataset", "mnist", "--budget", "2"], "--real-steps"),
    (["--proxy", "naswot", "--space", "micro", "--dataset", "mnist", "--budget", "2"],
     "NAS-Bench-201 network"),
    (["--proxy", "params", "--dataset", "mnist", "--arch-file", "/nonexistent/archs.txt"],
     "does not exist"),
])
def test_zero_cost_search_bad_input_is_one_line(tmp_path, args, message):
    r = runner.invoke(cli.app, ["search", "--out", str(tmp_path / "s"), *args])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output


def test_arch_file_bad_line_names_the_line(tmp_path):
    f = tmp_path / "archs.txt"
    f.write_text(GENOTYPES[0] + "\n|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|\n")
    r = runner.invoke(cli.app, ["search", "--proxy", "params", "--dataset", "mnist",
                                "--arch-file", str(f), "--out", str(tmp_path / "s")])
    assert r.exit_code != 0 and "line 2" in r.output and "bogus" in r.output



# -- MeCo, ZiCo and the vote (issue #41) ----------------------------------------------------------


def _two_channel_map(theta: float) -> np.ndarray:
    """[H=2, W=2, C=2]: channel 0 = a, channel 1 = a·cos θ + b·sin θ, a ⟂ b centred: ρ = cos θ."""
    a = np.array([1.0, -1.0, 1.0, -1.0])
    b = np.array([1.0, 1.0, -1.0, -1.0])
    return np.stack([a, a * np.cos(theta) + b * np.sin(theta)], axis=-1).reshape(2, 2, 2)


@pytest.mark.parametrize("theta", [0.0, 0.3, np.pi / 2, 2.0])
def test_meco_of_a_map_with_known_correlation(theta):
    # [[1, ρ], [ρ, 1]] has eigenvalues 1 ± ρ: MeCo = 1 - |cos θ|
    assert meco_map(_two_channel_map(theta)) == pytest.approx(1 - abs(np.cos(theta)), abs=1e-12)


def test_meco_invariances_and_undefined_entries():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4, 4, 5))
    base = meco_map(f)
    assert 0 <= base <= 1
    # a correlation ignores each channel's positive scale and shift, the order of positions and
    # of channels
    scaled = f * np.array([0.1, 2, 3, 4, 50]) + np.array([1, -2, 0, 7, 3])
    assert meco_map(scaled) == pytest.approx(base, rel=1e-10)
    assert meco_map(f.reshape(16, 5)[rng.permutation(16)].reshape(4, 4, 5)) == pytest.approx(base)
    assert meco_map(f[..., rng.permutation(5)]) == pytest.approx(base)
    # a constant channel has no correlation: its row and column are 0 (the official code's
    # NaN -> 0), so the smallest eigenvalue is 0; a map of one position or all zeros gives 0
    g = f.copy()
    g[..., 2] = 3.0
    assert meco_map(g) == pytest.approx(0.0, abs=1e-12)
    assert meco_map(np.zeros((4, 4, 3))) == 0.0
    assert meco_map(rng.normal(size=(1, 1, 6))) == 0.0
    # the network's score: each map times the number of modules that return it
    maps = [(f, 3), (_two_channel_map(0.3), 1), (f, 1)]
    assert meco_score(maps) == pytest.approx(4 * base + 1 - np.cos(0.3))


def test_meco_feature_maps_count_as_the_reference_networks_modules():
    """With every edge skip_connect and N=1, MeCo's official NB201 network has 59 modules that
    return a feature map: stem conv 1 + BN 3; per stage 6 Identity + cell + Sequential = 8 (x3);
    per reduction conv_a and conv_b 5 each (ReLU, conv, BN x3), shortcut pool 1 + conv 2, output
    1 (x2); head BN 1 + ReLU 2."""
    g = nb201.NB201Genotype(("skip_connect",) * 6)
    net = nb201.NB201Space().build(g, channels=4, cells=1, num_classes=10,
                                   input_shape=(8, 8, 3), layers="benchmark",
                                   activation="relu")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 3)), jnp.float32)
    v = net.init(jax.random.PRNGKey(0), x, train=True)
    _, cols = net.apply(v, x, train=True, mutable=["batch_stats", "feature_maps"])
    maps = feature_maps(cols["feature_maps"])
    assert sum(c for _, c in maps) == 59
    assert all(m.ndim == 4 and m.shape[0] == 1 for m, _ in maps)


@pytest.mark.parametrize("genotype", GENOTYPES)
def test_meco_of_a_network_ignores_the_input_scale(scorer, genotype):
    genotype = nb201.NB201Genotype.from_str(genotype)
    # stem conv (no bias) -> BN: every map after the stem BN is the same for c·x, and the stem
    # conv's own correlation does not see c
    key = jax.random.PRNGKey(3)
    a = scorer.score(genotype, key, ["meco"])["meco"][0]
    x = scorer.x
    try:
        scorer.x = x * 4.0
        b = scorer.score(genotype, key, ["meco"])["meco"][0]
    finally:
        scorer.x = x
    assert a > 0 and b == pytest.approx(a, rel=2e-3)


def test_zico_by_hand_and_its_invariances():
    g1 = [np.array([1.0, 2.0, 3.0]), np.zeros((2, 2)), np.array([1.0, 1.0])]
    g2 = [np.array([3.0, 2.0, 1.0]), np.zeros((2, 2)), np.array([1.0, 1.0])]
    # tensor 0: mean|g| = 2 everywhere, std (ddof 0) = [1, 0, 1]: log(2/1 + 2/1); tensors 1
    # (all zero) and 2 (equal gradients: std 0 everywhere) add nothing
    assert zico_score([g1, g2]) == pytest.approx(np.log(4.0))
    assert zico_score([g2, g1]) == pytest.approx(np.log(4.0))
    # each tensor's term ignores the gradients' scale; tensors add
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5))
    one, two = zico_score([[a[0]], [a[1]]]), zico_score([[b[0]], [b[1]]])
    assert zico_score([[a[0] * 7, b[0]], [a[1] * 7, b[1]]]) == pytest.approx(one + two)


@pytest.mark.parametrize("genotype", GENOTYPES + (
    "|none~0|+|nor_conv_1x1~0|none~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",))
def test_zico_gradients_are_the_networks_own(scorer, genotype):
    """ZiCo's gradients (per-op programs) against jax.grad of the genotype's own network, a cell
    with a zero node included; then the score from them."""
    g = nb201.NB201Genotype.from_str(genotype)
    key = jax.random.PRNGKey(4)
    net, _ = scorer.networks(g)
    v = net.init(key, scorer.x[:2], train=True)
    got = scorer.zico_grads(net, v["params"], v["batch_stats"])

    def loss(params, x, y):
        logits, _ = net.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                              train=True, mutable=["batch_stats"])
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))

    kernels = [k for k in traverse_util.flatten_dict(v["params"]) if k[-1] == "kernel"]
    assert len(got) == 2 and len(got[0]) == len(kernels) > 0
    for (x, y), grads in zip(scorer._zico_batches, got):
        want = traverse_util.flatten_dict(jax.grad(loss)(v["params"], x, y))
        for k, a in zip(sorted(kernels), grads):
            np.testing.assert_allclose(a, want[k], rtol=1e-4, atol=1e-6 * np.abs(want[k]).max())
    value, seconds = scorer.score(g, key, ["zico"])["zico"]
    assert value == pytest.approx(zico_score(got), rel=1e-6) and seconds >= 0


def test_registry_lists_every_proxy_once_with_its_pass():
    from gtn_nas.config import SEARCH_PROXIES, ZERO_COST_PROXIES

    assert set(ZERO_COST) >= {"meco", "zico", "naswot", "synflow"}
    assert tuple(ZERO_COST) == ZERO_COST_PROXIES and set(ZERO_COST) <= set(SEARCH_PROXIES)
    for name, proxy in ZERO_COST.items():
        assert proxy.run in ("naswot", "grads", "synflow", "meco", "zico"), name
        lo, hi = proxy.published
        assert 0 < lo <= hi < 1


def test_log_rank_vote_by_hand_and_monotone_invariance():
    from gtn_nas.search.vote import log_rank_vote, with_vote

    s = np.array([[1.0, 3.0], [2.0, 1.0], [3.0, 2.0]])
    want = [np.log(1 / 3) + 0, np.log(2 / 3) + np.log(1 / 3), 0 + np.log(2 / 3)]
    assert log_rank_vote(s) == pytest.approx(want)
    t = s.copy()
    t[:, 0] = np.exp(t[:, 0]) - 100  # a strictly increasing map of one part
    assert log_rank_vote(t) == pytest.approx(want)
    assert log_rank_vote(np.array([[1.0, 5.0], [1.0, 4.0]])) == pytest.approx(
        [np.log(1.5 / 2), np.log(1.5 / 2) + np.log(1 / 2)])  # a tie shares its mean rank
    rows = [{"idx": 0, "naswot_score": 1.0, "meco_score": 2.0},
            {"idx": 1, "naswot_score": 3.0, "meco_score": None},
            {"idx": 2, "naswot_score": 2.0, "meco_score": 5.0}]
    voted = with_vote(rows, ["naswot", "meco"])
    assert voted[1]["vote_score"] is None  # a missing part: no vote
    assert voted[2]["vote_score"] == 0.0 and voted[0]["vote_score"] == pytest.approx(2 * np.log(.5))
    assert "vote_score" not in rows[0]  # the stored rows stay as they were


@pytest.mark.parametrize("args, message", [
    (["--proxy", "naswot,meco", "--vote", "naswot,meco"], "needs vote in --proxy"),
    (["--proxy", "naswot,vote", "--vote", "naswot,zico"], "zico: not in --proxy"),
    (["--proxy", "naswot,vote"], "at least 2 proxies"),
    (["--proxy", "naswot,meco,vote", "--vote", "naswot,vote"], "vote cannot be one"),
])
def test_vote_bad_input_is_one_line(tmp_path, args, message):
    r = runner.invoke(cli.app, ["search", "--out", str(tmp_path / "s"), "--dataset", "cifar10",
                                "--budget", "2", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
