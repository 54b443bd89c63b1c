"""`gtn-nas search` and `gtn-nas rank` at tiny sizes: rows end to end, resume without lost or
duplicated rows, hand-computed rank correlations, one-line CLI errors."""

import csv
import itertools
import json
import sqlite3

import numpy as np
import jax
import pytest
from typer.testing import CliRunner

import cli
from gtn_nas.commands import search as lib
from gtn_nas.config import SearchConfig, build_config
from gtn_nas.search.indices import genotype_at, indices
from gtn_nas.config import RankConfig
from gtn_nas.commands.rank import (best_of, bootstrap_spearman, rank, rank_metrics,
                                   spearman_interval)
from gtn_nas.search.store import Store
from search_spaces import get_space

runner = CliRunner()
TIMING = {"gtn_train_s", "gtn_compile_s", "real_train_s", "real_compile_s", "seconds",
          "finished_at", "worker"}


def _cfg(gtn_run, fake_mnist, out, **kw):
    over = dict(gtn=str(gtn_run), out=str(out), data_dir=str(fake_mnist), channels=2,
                eval_subset=16, proxies=("gtn", "real", "params"), program="exact")
    over.update(kw)
    return build_config(SearchConfig, "tiny", over)


def _rows(folder):
    with sqlite3.connect(folder / "results.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM results ORDER BY idx")]


def _scores(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(gtn_run, fake_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "full"
    summary = lib.search(_cfg(gtn_run, fake_mnist, out, budget=3))
    return out, summary


def test_tiny_search_end_to_end_through_the_cli(gtn_run, fake_mnist, tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(cli.app, ["search", "--gtn", str(gtn_run), "--preset", "tiny",
                                     "--budget", "2", "--proxy", "gtn,real,params",
                                     "--channels", "2", "--eval-subset", "16",
                                     "--data-dir", str(fake_mnist), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    rows = _rows(out)
    assert [r["idx"] for r in rows] == [0, 1]
    space = get_space("nb201")
    for r in rows:
        space.from_str(r["genotype"])
        assert r["params"] > 0 and r["flops"] > 0
        for p in ("gtn", "real"):
            assert 0.0 <= r[f"{p}_score"] <= 1.0
            assert r[f"{p}_train_s"] > 0 and r[f"{p}_compile_s"] >= 0
    # Architecture 1 reuses nothing it should not: its genotype is index 1's, from fold_in.
    assert rows[1]["genotype"] == genotype_at(space, _cfg(gtn_run, fake_mnist, out, budget=2),
                                                  1).to_str()
    with open(out / "leaderboard.csv") as f:
        board = list(csv.DictReader(f))
    assert len(board) == 2
    top = json.loads((out / "top" / "01.json").read_text())
    assert top["arch"] == max(rows, key=lambda r: (r["gtn_score"], -r["idx"]))["genotype"]
    assert top["provenance"]["index"] in (0, 1) and top["scores"]["gtn"] == pytest.approx(
        max(r["gtn_score"] for r in rows))
    from gtn_nas.search.archs import resolve_archs
    assert resolve_archs(str(out / "top" / "01.json"), None, None)[0]


def test_gtn_bn_real_recalibrates_the_eval_statistics(uninterrupted, gtn_run, fake_mnist,
                                                       tmp_path):
    """--gtn-bn real: the same cells and weights, evaluated with batch-norm statistics of one
    fixed real batch, so the gtn scores move; a directory keeps the setting it was made with."""
    from gtn_nas.core.training import recalibrate_bn
    from gtn_nas.core.unroll import init_inner_state
    from gtn_nas.errors import ConfigError

    out = tmp_path / "recal"
    lib.search(_cfg(gtn_run, fake_mnist, out, budget=3, proxies=("gtn",), gtn_bn="real"))
    rows, base = _rows(out), _rows(uninterrupted[0])
    assert [r["genotype"] for r in rows] == [r["genotype"] for r in base]
    assert all(0.0 <= r["gtn_score"] <= 1.0 for r in rows)
    assert [r["gtn_score"] for r in rows] != [r["gtn_score"] for r in base]
    with pytest.raises(ConfigError, match="gtn_bn"):
        lib.search(_cfg(gtn_run, fake_mnist, out, budget=3, proxies=("gtn",)))
    # With momentum-0 statistics, eval mode after recalibrating on x is train mode on x.
    space = get_space("nb201")
    learner = space.learner(space.from_str(rows[0]["genotype"]), 2, 1, 10, (28, 28, 1))
    st = init_inner_state(learner, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28, 1))
    train_logits, _ = learner.apply(st.params, st.stats, x, True)
    eval_logits, _ = learner.apply(st.params, recalibrate_bn(learner, st, x).stats, x, False)
    np.testing.assert_allclose(eval_logits, train_logits, rtol=1e-4, atol=1e-5)


def test_killed_search_resumes_to_the_same_rows(uninterrupted, gtn_run, fake_mnist, tmp_path):
    out = tmp_path / "killed"
    cfg = _cfg(gtn_run, fake_mnist, out, budget=3)
    seen = []

    def kill_after_two(row):
        seen.append(row["idx"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lib.search(cfg, on_row=kill_after_two)
    assert [r["idx"] for r in _rows(out)] == [0, 1]
    lib.search(cfg)
    rows = _rows(out)
    assert [r["idx"] for r in rows] == [0, 1, 2]  # nothing lost, nothing twice
    assert _scores(rows) == _scores(_rows(uninterrupted[0]))


def test_two_worker_processes_write_exactly_the_one_process_rows(uninterrupted, gtn_run,
                                                                   fake_mnist, tmp_path):
    out = tmp_path / "two"
    summary = lib.search(_cfg(gtn_run, fake_mnist, out, budget=3, workers=2))
    rows = _rows(out)
    assert [r["idx"] for r in rows] == [0, 1, 2]
    assert _scores(rows) == _scores(_rows(uninterrupted[0]))
    # Two real processes did the work: shard 0 of 2 took indices 0 and 2, shard 1 index 1.
    workers = [r["worker"] for r in rows]
    assert workers[0].endswith("/0of2") and workers[2] == workers[0]
    assert workers[1].endswith("/1of2") and workers[1].split("/")[0] != workers[0].split("/")[0]
    assert summary["architectures"] == 3 and (out / "top" / "01.json").exists()
    # A second host (or process) with --shard/--num-shards adds only its own indices.
    shard = tmp_path / "shard"
    lib.search(_cfg(gtn_run, fake_mnist, shard, budget=3, num_shards=2, shard=1))
    assert _scores(_rows(shard)) == _scores(_rows(uninterrupted[0]))[1:2]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_shards_partition_the_indices(gtn_run, fake_mnist, tmp_path, n):
    cfg = _cfg(gtn_run, fake_mnist, tmp_path, budget=7)
    parts = [list(indices(cfg, s, n)) for s in range(n)]
    assert sorted(itertools.chain(*parts)) == list(range(7))


def test_shard_from_jax_launch_variables(gtn_run, fake_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert lib.shard_of(_cfg(gtn_run, fake_mnist, tmp_path, budget=7)) == (3, 4)
    assert lib.shard_of(_cfg(gtn_run, fake_mnist, tmp_path, budget=7, num_shards=2,
                             shard=0)) == (0, 2)


def _hand_spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    n = len(x)
    return 1 - 6 * np.sum((rx - ry) ** 2) / (n * (n * n - 1))


def _hand_kendall(x, y):
    n, s = len(x), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return s / (n * (n - 1) / 2)


def test_rank_metrics_match_hand_computed_values():
    proxy = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    truth = np.array([0.2, 0.4, 0.6, 0.8, 0.1])
    m = rank_metrics(proxy, truth, top_fraction=0.6)
    assert m["spearman"] == pytest.approx(_hand_spearman(proxy, truth))  # 0.1
    assert m["kendall"] == pytest.approx(_hand_kendall(proxy, truth))  # 0.0
    top = np.argsort(-proxy)[:3]  # indices 3, 4, 1
    assert m["top_n"] == 3
    assert m["spearman_top"] == pytest.approx(_hand_spearman(proxy[top], truth[top]))
    assert m["picked_index"] == 3 and m["picked_truth"] == pytest.approx(0.8)
    assert m["picked_truth_rank"] == 1 and m["top10_overlap"] == 1.0


def test_bootstrap_spearman_is_scipys_rho_on_each_paired_resample():
    """Each resample's rho equals scipy's on the same rows (ties included), every proxy sees the
    same resamples, and the interval holds rho and narrows as architectures are added."""
    from scipy import stats

    rng = np.random.default_rng(3)
    truth = rng.normal(size=40)
    proxies = np.stack([np.round(truth + rng.normal(size=40)), truth + 0.1 * rng.normal(size=40)])
    rho = bootstrap_spearman(proxies, truth, resamples=50, seed=7)
    idx = np.random.default_rng(7).integers(0, 40, (50, 40))
    for r in (0, 17, 49):
        for p in range(2):
            assert rho[p, r] == pytest.approx(
                stats.spearmanr(proxies[p][idx[r]], truth[idx[r]]).statistic)
    assert np.mean(rho[1] > rho[0]) > 0.9  # the nearly exact proxy wins paired resamples
    lo, hi = spearman_interval(proxies[0], truth)
    assert lo < stats.spearmanr(proxies[0], truth).statistic < hi
    big = rng.normal(size=400)
    lo4, hi4 = spearman_interval(big + rng.normal(size=400), big)
    assert hi4 - lo4 < (hi - lo) / 2
    assert spearman_interval(np.ones(10), truth[:10]) is None  # a constant proxy: no interval
    assert rank_metrics(proxies[0], truth)["spearman_ci95"] == [lo, hi]


def _hand_store(folder, scores, proxy="gtn"):
    folder.mkdir(parents=True)
    space = get_space("nb201")
    genotypes = list(itertools.islice(space.enumerate(), len(scores)))
    with Store(folder / "results.sqlite") as store:
        for i, (g, s) in enumerate(zip(genotypes, scores)):
            store.put({"idx": i, "genotype": g.to_str(), "space": "nb201", "params": 100 + i,
                       f"{proxy}_score": s})
    return [g.to_str() for g in genotypes]


def test_rank_against_another_search(tmp_path):
    proxy = [0.1, 0.5, 0.3, 0.9, 0.7]
    truth = [0.2, 0.4, 0.6, 0.8, 0.1]
    _hand_store(tmp_path / "a", proxy, "gtn")
    _hand_store(tmp_path / "b", truth, "real")
    summary = rank(RankConfig(search=str(tmp_path / "a"), truth=f"{tmp_path / 'b'}:real"))
    gtn = summary["proxies"]["gtn"]
    assert gtn["spearman"] == pytest.approx(_hand_spearman(np.array(proxy), np.array(truth)))
    assert gtn["kendall"] == pytest.approx(_hand_kendall(np.array(proxy), np.array(truth)))
    # params 100..104 rise with the index: its correlation is the truth's with the index.
    assert summary["proxies"]["params"]["spearman"] == pytest.approx(
        _hand_spearman(np.arange(5.0), np.array(truth)))
    assert (tmp_path / "a" / "plots" / "rank_gtn.png").stat().st_size > 0


def _one_error(result):
    assert result.exit_code == 2, result.output + result.stderr
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("args, needle", [
    (["--space", "foo"], "foo"),
    (["--proxy", "gtn,foo"], "foo"),
    (["--arch", "|nor_conv_3x3~0|+|bogus~0|"], "bogus"),
    (["--dataset", "fashion_mnist"], "fashion_mnist"),
    (["--num-shards", "2", "--shard", "2"], "--shard"),
    (["--workers", "0"], "workers"),
])
def test_search_bad_input(args, needle, gtn_run, fake_mnist, tmp_path):
    result = runner.invoke(cli.app, ["search", "--gtn", str(gtn_run), "--preset", "tiny",
                                     "--data-dir", str(fake_mnist), "--out",
                                     str(tmp_path / "s"), *args])
    assert needle in _one_error(result)


def test_search_without_a_gtn_run(tmp_path):
    result = runner.invoke(cli.app, ["search", "--gtn", str(tmp_path / "nothing"), "--preset",
                                     "tiny", "--out", str(tmp_path / "s")])
    assert "nothing" in _one_error(result)


def test_rank_bad_truth(tmp_path):
    result = runner.invoke(cli.app, ["rank", str(tmp_path), "--truth", "elsewhere"])
    _one_error(result)


def test_cosine_real_schedule():
    from gtn_nas.core.training import lr_schedule

    np.testing.assert_allclose(lr_schedule(0.2, 4, "cosine"), [0.2, 0.1707107, 0.1, 0.0292893],
                               rtol=1e-5)
    np.testing.assert_array_equal(lr_schedule(0.2, 3), np.full(3, 0.2, np.float32))


def test_proxy_benchmark_correlates_the_same_architectures(gtn_run, fake_mnist, tmp_path,
                                                           monkeypatch):
    """benchmarks/proxy.py: resumable stages over the same architectures, extended chunk by
    chunk, then one correlation per proxy (zero-cost ones included) against the cosine-schedule
    truth, and the rho-vs-steps curve of the GTN and real data."""
    import benchmarks.proxy as bench

    out = tmp_path / "bench"
    argv = ["proxy.py", "--gtn", str(gtn_run), "--channels", "2", "--eval-subset", "16",
            "--program", "exact", "--long-factor", "2", "--truth-steps", "6", "--chunk", "2",
            "--curve", "2", "--zero-cost", "--zc-batch-size", "8", "--gtn-bn-real",
            "--data-dir", str(fake_mnist), "--out", str(out), "--no-record", "--quiet"]
    monkeypatch.setattr("sys.argv", argv + ["--archs", "2"])
    bench.main()
    monkeypatch.setattr("sys.argv", argv + ["--archs", "3"])  # resumes: adds index 2 only
    bench.main()
    result = json.loads((out / "proxy.json").read_text())
    assert result["n"] == 3 and result["series"]["idx"] == [0, 1, 2]
    stages = {s: _rows(out / s) for s in ("proxy", "real-long", "truth")}
    assert [[r["genotype"] for r in rows] for rows in stages.values()].count(
        [r["genotype"] for r in stages["proxy"]]) == 3
    assert result["series"]["truth"] == [r["real_score"] for r in stages["truth"]]
    assert result["series"]["gtn"] == [r["gtn_score"] for r in stages["proxy"]]
    cfgs = {s: json.loads((out / s / "config.json").read_text()) for s in stages}
    assert (cfgs["truth"]["real_steps"], cfgs["truth"]["real_schedule"]) == (6, "cosine")
    assert cfgs["real-long"]["real_steps"] == 2 * cfgs["proxy"]["real_steps"]
    from scipy.stats import rankdata

    for a, b in (("gtn", "naswot"), ("gtn-bnreal", "synflow")):
        np.testing.assert_allclose(result["series"][f"{a}+{b}"], (rankdata(result["series"][a])
                                   + rankdata(result["series"][b])) / 2)
    assert json.loads((out / "gtn-bnreal" / "config.json").read_text())["gtn_bn"] == "real"
    assert set(result["gtn_beats_rival_bootstrap"]) == {"gtn", "gtn-bnreal"}
    for k in ("gtn", "real", "real-long", "params", "flops", "synflow", "naswot", "gtn@2",
              "gtn+naswot", "gtn+synflow", "real@2", "gtn-bnreal", "gtn-bnreal+naswot",
              "gtn-bnreal+synflow"):
        m = result["metrics"][k]
        assert m["n"] == 3 and (m["spearman"] is None or -1 <= m["spearman"] <= 1)
        assert (out / f"proxy-{k}.png").stat().st_size > 0
    assert json.loads((out / "real@2" / "config.json").read_text())["real_steps"] == 2
    assert [s for s, _ in result["rho_vs_steps"]["real data"]] == [2, 4, 8]  # T = 4, 9x = 2
    assert (out / "rho_vs_steps.png").stat().st_size > 0


def test_shared_program_scores_like_exact_and_compiles_once(uninterrupted, gtn_run, fake_mnist,
                                                             tmp_path):
    """The NB201 supernet stepped from the host: one compilation for every architecture, the
    same scores as each genotype's own network (same initial weights, same batches)."""
    exact_dir, _ = uninterrupted
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "shared", budget=3, program="shared"))
    exact, shared = _rows(exact_dir), _rows(tmp_path / "shared")
    assert [r["genotype"] for r in shared] == [r["genotype"] for r in exact]
    for col in ("gtn_score", "real_score"):
        np.testing.assert_allclose([r[col] for r in shared], [r[col] for r in exact], atol=1 / 16)
    assert [r["gtn_compile_s"] > 0 for r in shared] == [True, False, False]
    assert all(r["real_compile_s"] == 0 for r in shared[1:])


def test_composed_program_scores_like_exact(uninterrupted, gtn_run, fake_mnist, tmp_path):
    """Each genotype run as the per-op programs every NB201 genotype shares: the scores of its
    own compiled network (same initial weights, same batches)."""
    exact_dir, _ = uninterrupted
    summary = lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "composed", budget=3,
                              program="composed"))
    assert summary["program"] == "composed"
    exact, composed = _rows(exact_dir), _rows(tmp_path / "composed")
    assert [r["genotype"] for r in composed] == [r["genotype"] for r in exact]
    for col in ("gtn_score", "real_score"):
        np.testing.assert_allclose([r[col] for r in composed], [r[col] for r in exact],
                                   atol=1 / 16)


def test_auto_program_is_composed_on_cpu_for_nb201_and_exact_for_micro(gtn_run, fake_mnist,
                                                                        tmp_path, monkeypatch):
    from gtn_nas.commands.search import _resolve_program

    nb201 = _cfg(gtn_run, fake_mnist, tmp_path / "a", program="auto")
    micro = _cfg(gtn_run, fake_mnist, tmp_path / "b", program="auto", space="micro")
    assert (_resolve_program(nb201), _resolve_program(micro)) == ("composed", "exact")
    assert _resolve_program(nb201, stored="exact") == "exact"  # a resumed search keeps its own
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert (_resolve_program(nb201), _resolve_program(micro)) == ("shared", "exact")


def test_shared_scan_program_scores_like_exact(uninterrupted, gtn_run, fake_mnist, tmp_path,
                                               monkeypatch):
    """Where an accelerator runs the supernet (the whole proxy one compiled scan program, not
    stepped from the host), the scores still match each genotype's own network, and the program
    is compiled once. The program is backend-independent, so the CPU can check it."""
    exact_dir, _ = uninterrupted
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "scan", budget=3, program="shared"))
    exact, scan = _rows(exact_dir), _rows(tmp_path / "scan")
    for col in ("gtn_score", "real_score"):
        np.testing.assert_allclose([r[col] for r in scan], [r[col] for r in exact], atol=1 / 16)
    assert [r["gtn_compile_s"] > 0 for r in scan] == [True, False, False]


def test_gtn_bn_real_scores_alike_stepped_and_in_the_scan_program(gtn_run, fake_mnist, tmp_path,
                                                                   monkeypatch):
    """--gtn-bn real recalibrates in both places a gtn score is computed: the CPU's stepped
    genotype networks and the accelerator's whole scan program of the supernet."""
    kw = dict(budget=3, proxies=("gtn",), gtn_bn="real")
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "exact", **kw))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "scan", program="shared", **kw))
    np.testing.assert_allclose([r["gtn_score"] for r in _rows(tmp_path / "scan")],
                               [r["gtn_score"] for r in _rows(tmp_path / "exact")], atol=1 / 16)


def test_compiled_programs_are_keyed_on_all_they_bake_in(gtn_run, fake_mnist, tmp_path,
                                                          monkeypatch):
    """The accelerator's whole-proxy program bakes in the real-data lr schedule and the
    convolution form ($GTN_NAS_CONV): a search that changes either compiles anew instead of
    reusing the other's program (a cosine ground truth silently equal to a constant-lr proxy)."""
    from gtn_nas.search.programs import PROGRAMS

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    PROGRAMS.clear()  # other tests' too
    kw = dict(budget=1, program="shared", proxies=("real",))
    first = lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "a", **kw))
    assert _rows(tmp_path / "a")[0]["real_compile_s"] > 0
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "b", **kw))
    assert _rows(tmp_path / "b")[0]["real_compile_s"] == 0  # same program: cached
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "c", real_schedule="cosine", **kw))
    assert _rows(tmp_path / "c")[0]["real_compile_s"] > 0
    monkeypatch.setenv("GTN_NAS_CONV", "slices")
    lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "d", **kw))
    assert _rows(tmp_path / "d")[0]["real_compile_s"] > 0
    assert first["architectures"] == 1


def test_rank_refuses_the_nb201_table_for_an_mnist_search(uninterrupted):
    out, _ = uninterrupted
    line = _one_error(runner.invoke(cli.app, ["rank", str(out), "--truth", "nb201"]))
    assert "on mnist" in line and "--truth DIR:real" in line
    assert not (out / "rank.json").exists()


@pytest.mark.parametrize("command", ["evaluate", "search"])
def test_a_search_directory_is_not_a_gtn_run(uninterrupted, command, tmp_path):
    out, _ = uninterrupted
    args = ["--gtn", str(out)] + (["--out", str(tmp_path / "s"), "--budget", "1"]
                                  if command == "search" else [])
    line = _one_error(runner.invoke(cli.app, [command, *args, "--quiet"]))
    assert "is not a meta-training run" in line and "search run" in line


def test_time_budget_counts_the_workers_time(gtn_run, fake_mnist, tmp_path, monkeypatch):
    """The parent of `--workers N` scores what its workers left only within the same budget:
    after workers that used it all up, it starts no architecture (it used to start a fresh clock
    and run about twice the budget)."""
    import time

    from gtn_nas.search import fanout

    monkeypatch.setattr(fanout, "run_workers", lambda *a, **k: time.sleep(1.5))
    summary = lib.search(_cfg(gtn_run, fake_mnist, tmp_path / "s", budget=3, workers=2,
                              time_budget=1.0))
    assert summary["scored_now"] == 0 and summary["architectures"] == 0
    assert _rows(tmp_path / "s") == []


def test_a_second_search_on_the_same_shard_is_refused(gtn_run, fake_mnist, tmp_path):
    out = tmp_path / "s"
    cfg = _cfg(gtn_run, fake_mnist, out, budget=1)
    out.mkdir()
    held = lib.claim_shard(out, 0, 1)  # as a first `gtn-nas search` still running holds it
    try:
        with pytest.raises(lib.ConfigError, match=r"gtn-nas \(pid \d+ on .+\) is already running "
                                                  r"the search of shard 0 of 1"):
            lib.search(cfg)
        assert not (out / "results.sqlite").exists() or _rows(out) == []
    finally:
        held.close()
    assert lib.search(cfg)["architectures"] == 1  # once it is done, the same command runs


def test_best_of_n_by_hand():
    """A proxy equal to the truth always picks the subset's best; its reverse the worst; over many
    resamples the mean pick of a random proxy lies between."""
    truth = np.arange(30, dtype=float)
    perfect = best_of(truth, truth, 10, resamples=200)
    assert perfect["mean"] == perfect["oracle_mean"]
    worst = best_of(-truth, truth, 10, resamples=200)
    # the minimum of 10 of 0..29 drawn without replacement has mean (30 + 1) / 11 - 1
    assert worst["mean"] == pytest.approx(31 / 11 - 1, abs=0.4)
    assert best_of(truth, truth, 31) is None
    m = rank_metrics(truth[::-1].copy(), truth)
    assert m["best_of_10"]["mean"] < m["best_of_10"]["oracle_mean"] and m["best_of_100"] is None


def test_store_adds_the_columns_of_new_proxies(tmp_path):
    """A results database written before the zero-cost proxies existed opens and takes them."""
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute("CREATE TABLE results (idx INTEGER PRIMARY KEY, genotype TEXT NOT NULL, "
                   "space TEXT NOT NULL, params INTEGER NOT NULL, flops REAL, gtn_score REAL, "
                   "gtn_train_s REAL, gtn_compile_s REAL, real_score REAL, real_train_s REAL, "
                   "real_compile_s REAL, seconds REAL, worker TEXT, finished_at REAL)")
        db.execute("INSERT INTO results (idx, genotype, space, params, gtn_score) "
                   "VALUES (0, 'g', 'nb201', 5, 0.5)")
    with Store(path) as store:
        store.put({"idx": 0, "genotype": "g", "space": "nb201", "params": 5,
                   "synflow_score": 2.0})
        (row,) = store.rows()
    assert row["gtn_score"] == 0.5 and row["synflow_score"] == 2.0
