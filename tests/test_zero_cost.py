"""Zero-cost proxies (gtn_nas.search.zero_cost): each score against its definition written out by
hand, the genotype's own network against the one-hot supernet, and `gtn-nas search` without a GTN
(--arch-file, one leaderboard column per proxy) followed by `gtn-nas rank --truth nb201`."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from gtn_nas.search.store import DEGENERATE
from gtn_nas.search.zero_cost import (ZERO_COST, ZeroCostScorer, grad_norm_score, jacov_score,
                                      naswot_kernel, naswot_score, snip_score)
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
    got = scorer.score(g, key, ZERO_COST)
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
    for proxy in ZERO_COST:
        assert got[proxy][0] == pytest.approx(want[proxy], rel=2e-4), proxy
        assert got[proxy][1] >= 0.0


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
    proxies = "params,flops,synflow,naswot,jacov,snip,grad_norm"
    r = runner.invoke(cli.app, ["search", "--space", "nb201", "--dataset", "cifar10",
                                "--data-dir", str(shared_data), "--arch-file", str(archs),
                                "--proxy", proxies, "--channels", "4", "--cells", "1",
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

