"""Search strategies and the cascade (issue #42): ask/tell on NB201 genotypes with a known score,
successive halving's keep counts, a genotype proposed twice scored once, a killed cascade resumed
to the uninterrupted one's pick, and a tiny cascade end to end through the CLI."""

import csv
import json
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from gtn_nas.commands import search as lib
from gtn_nas.config import SearchConfig, build_config
from gtn_nas.errors import ConfigError
from gtn_nas.search import driver
from gtn_nas.search.cascade import keep_count, run_cascade
from gtn_nas.search.indices import genotype_at
from gtn_nas.search.stages import Fidelity, Objective, Stage, parse_stages
from gtn_nas.search.strategies import Evolution, LocalSearch, RandomSearch
from gtn_nas.search.vote import log_rank_vote
from search_spaces import get_space

runner = CliRunner()
SPACE = get_space("nb201")
WEIGHT = {"none": 0.0, "skip_connect": 1.0, "avg_pool_3x3": 0.5, "nor_conv_1x1": 2.0,
          "nor_conv_3x3": 3.0}


def _value(genotype) -> float:
    """A known landscape: conv-heavy cells score high, edge by edge (its optimum: all 3x3)."""
    return float(sum(WEIGHT[op] * (1 + 0.01 * e) for e, op in enumerate(genotype.ops)))


def _objective(proxy="flops", steps=None):
    return Objective(proxy, Fidelity(steps, 4, 1))


class Counting:
    """An evaluator of the known landscape that counts what it scores, by fidelity, and can be
    told to fail (a kill) after a number of new evaluations."""

    def __init__(self, kill_after=None, store=None):
        self.calls, self.scored, self.kill_after = 0, {}, kill_after
        self.store = {} if store is None else store  # (genotype, fidelity) -> scores

    def __call__(self, genotype, objective):
        self.calls += 1
        key = (genotype.to_str(), objective.fidelity.key)
        if key not in self.store:
            if self.kill_after is not None and len(self.scored) >= self.kill_after:
                raise KeyboardInterrupt
            noise = 0.0 if objective.fidelity.steps else 0.3 * np.sin(len(genotype.to_str())
                                                                      + _value(genotype))
            self.store[key] = {p: _value(genotype) + noise for p in objective.scored}
            self.scored[key] = self.store[key]
        return self.store[key], 0.0


def test_random_strategy_proposes_the_search_s_architecture_i():
    cfg = build_config(SearchConfig, None, dict(dataset="cifar10", proxies=("flops",), seed=3))
    s = RandomSearch(SPACE, _objective(), seed=3)
    assert [s.ask().to_str() for _ in range(6)] == [genotype_at(SPACE, cfg, i).to_str()
                                                    for i in range(6)]


def test_evolution_population_tournament_and_ageing():
    obj = _objective()
    evo = Evolution(SPACE, obj, seed=0, population=4, sample=2)
    first = []
    for _ in range(4):  # the first population: the search's random architectures 0..3
        g = evo.ask()
        first.append(g)
        evo.tell(g, {"flops": _value(g)})
    rnd = RandomSearch(SPACE, obj, 0)
    assert [g.to_str() for g in first] == [rnd.ask().to_str() for _ in range(4)]
    assert evo.cycle == 0 and len(evo.population) == 4
    child = evo.ask()
    # the child is one mutation away from a member of the population
    assert any(sum(a != b for a, b in zip(child.ops, m.ops)) == 1 for m, _ in evo.population)
    evo.tell(child, {"flops": _value(child)})
    members = [g.to_str() for g, _ in evo.population]
    assert len(members) == 4 and first[0].to_str() not in members  # the oldest died
    assert members[-1] == child.to_str()
    evo = Evolution(SPACE, obj, seed=0, population=20, sample=5)
    seen = []
    for _ in range(200):  # on a smooth landscape it climbs
        g = evo.ask()
        evo.tell(g, {"flops": _value(g)})
        seen.append(_value(g))
    assert max(seen[20:]) > max(seen[:20]) + 3


def test_evolution_tournament_takes_the_best_of_its_sample(monkeypatch):
    """With the whole population in the tournament, the parent is the best member."""
    obj = _objective()
    evo = Evolution(SPACE, obj, seed=1, population=5, sample=5)
    for _ in range(5):
        g = evo.ask()
        evo.tell(g, {"flops": _value(g)})
    best = max((g for g, _ in evo.population), key=_value)
    parents = []
    monkeypatch.setattr(SPACE, "mutate", lambda g, k: parents.append(g) or g)
    evo.ask()
    assert parents == [best]


def test_local_search_moves_to_the_best_neighbour_and_restarts_at_a_local_optimum():
    obj = _objective()
    loc = LocalSearch(SPACE, obj, seed=0)
    start = loc.ask()
    loc.tell(start, {"flops": _value(start)})
    asked = [loc.ask() for _ in range(24)]
    assert {g.to_str() for g in asked} == {g.to_str() for g in SPACE.neighbours(start)}
    for g in asked:
        loc.tell(g, {"flops": _value(g)})
    nxt = loc.ask()  # the move happened: the new current is the best neighbour
    assert loc.state()["current"] == max(asked, key=_value).to_str() and loc.moves == 1
    assert nxt.to_str() in {g.to_str() for g in SPACE.neighbours(max(asked, key=_value))}
    loc.tell(nxt, {"flops": _value(nxt)})
    for _ in range(2000):  # climbs the landscape to its optimum, then restarts
        g = loc.ask()
        loc.tell(g, {"flops": _value(g)})
        if loc.restarts:
            break
    assert loc.restarts == 1 and loc.moves >= 2


def test_keep_counts_of_successive_halving():
    assert [keep_count(n, 4) for n in (0, 1, 4, 5, 100)] == [0, 1, 1, 2, 25]
    stages = parse_stages(["evolution:flops", "real@8", "real@64"], channels=4, cells=1,
                          real_steps=None, gtn_steps=None, vote=())
    ev = Counting()
    result = run_cascade(stages, SPACE, 0, ev, lambda: 0.0, budget=40, time_budget=None, eta=4,
                         strategy_options={"population": 8, "sample": 3})
    assert [len(s.genotypes) for s in result.stages] == [40, 10, 3]
    # each later stage re-scores the best of the stage before it
    ranked1 = [g.to_str() for g, _ in result.stages[0].ranked()[:10]]
    assert [g.to_str() for g in result.stages[1].genotypes] == ranked1
    best = result.best()
    assert best["stage"] == "real@64/4x1" and set(best["scores"]) == {
        "evolution:flops/4x1", "real@8/4x1", "real@64/4x1"}
    assert best["genotype"] == result.stages[2].ranked()[0][0].to_str()


def test_a_genotype_proposed_twice_is_scored_once():
    stages = parse_stages(["evolution:flops"], channels=4, cells=1, real_steps=None,
                          gtn_steps=None, vote=())
    ev = Counting()
    result = run_cascade(stages, SPACE, 0, ev, lambda: 0.0, budget=150, time_budget=None,
                         strategy_options={"population": 10, "sample": 5})
    assert len(result.stages[0].genotypes) == 150
    assert len({g.to_str() for g in result.stages[0].genotypes}) == 150
    assert ev.calls > len(ev.scored) == 150  # evolution re-proposed some: not scored again


def test_a_killed_cascade_resumes_to_the_uninterrupted_pick():
    stages = parse_stages(["evolution:flops", "real@8", "real@32"], channels=4, cells=1,
                          real_steps=None, gtn_steps=None, vote=())
    kw = dict(budget=30, time_budget=None, eta=3,
              strategy_options={"population": 6, "sample": 2})
    full = run_cascade(stages, SPACE, 5, Counting(), lambda: 0.0, **kw)
    store, ended = {}, {}
    for kill in (7, 12, 25):  # killed three times, each rerun going further
        try:
            run_cascade(stages, SPACE, 5, Counting(kill_after=kill, store=store), lambda: 0.0,
                        ended=ended, on_stage_end=ended.__setitem__, **kw)
        except KeyboardInterrupt:
            pass
    again = run_cascade(stages, SPACE, 5, Counting(store=store), lambda: 0.0, ended=ended,
                        on_stage_end=ended.__setitem__, **kw)
    assert again.best() == full.best()
    assert [[g.to_str() for g in s.genotypes] for s in again.stages] == \
        [[g.to_str() for g in s.genotypes] for s in full.stages]


def test_a_time_budgeted_cascade_shares_its_time_and_resumes_where_it_stopped():
    stages = parse_stages(["random:flops", "real@8"], channels=4, cells=1, real_steps=None,
                          gtn_steps=None, vote=())
    clock = {"t": 0.0}

    class Timed(Counting):
        def __call__(self, genotype, objective):
            new = (genotype.to_str(), objective.fidelity.key) not in self.store
            out = super().__call__(genotype, objective)
            clock["t"] += (1.0 if objective.fidelity.steps is None else 5.0) * new
            return out

    ended = {}
    store = {}
    r = run_cascade(stages, SPACE, 0, Timed(store=store), lambda: clock["t"], budget=None,
                    time_budget=100.0, eta=4, explore_share=0.6, ended=ended,
                    on_stage_end=ended.__setitem__)
    assert len(r.stages[0].genotypes) == 60 and ended == {0: 60}
    assert len(r.stages[1].genotypes) == 8  # 40 s left at 5 s each, of the best 15
    clock["t"] = 0.0  # a second invocation: the first stage replays, the second goes on
    r2 = run_cascade(stages, SPACE, 0, Timed(store=store), lambda: clock["t"], budget=None,
                     time_budget=100.0, eta=4, explore_share=0.6, ended=ended)
    assert len(r2.stages[0].genotypes) == 60 and len(r2.stages[1].genotypes) == 15
    assert r2.stages[1].complete


def test_a_single_stage_search_uses_its_whole_time_budget():
    stages = parse_stages(["evolution:flops"], channels=4, cells=1, real_steps=None,
                          gtn_steps=None, vote=())
    clock = {"t": 0.0}

    def timed(genotype, objective):
        clock["t"] += 1.0
        return Counting()(genotype, objective)

    r = run_cascade(stages, SPACE, 0, timed, lambda: clock["t"], budget=None, time_budget=50.0,
                    explore_share=0.3, strategy_options={"population": 5, "sample": 2})
    assert clock["t"] == 50.0 and r.stages[0].complete


def test_vote_objective_ranks_by_log_rank_over_the_set_it_is_given():
    obj = Objective("vote", Fidelity(None, 16, 5), ("flops", "meco"))
    scores = [{"flops": 1.0, "meco": 3.0}, {"flops": 2.0, "meco": 2.0}, {"flops": 3.0, "meco": 1.0},
              {"flops": 4.0, "meco": 4.0}]
    assert np.allclose(obj.utility(scores), log_rank_vote(np.array([[1, 3], [2, 2], [3, 1],
                                                                    [4, 4]])))
    assert obj.order(scores)[0] == 3


@pytest.mark.parametrize("stages, needle", [
    (["evolution:vote", "local:real@8"], "only the first stage"),
    (["annealing:flops"], "unknown strategy"),
    (["random:accuracy"], "unknown proxy"),
    (["random:flops", "real"], "give its steps"),
    (["random:naswot@8"], "takes no @STEPS"),
    (["random:flops", "flops"], "listed twice"),
    (["random:flops/0x1"], "positive"),
    (["random:real@eight"], "cannot read stage"),
])
def test_bad_stages_are_refused(stages, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_stages(stages, channels=4, cells=1, real_steps=None, gtn_steps=None,
                     vote=("flops", "meco"))


@pytest.mark.parametrize("args, needle", [
    (["--strategy", "cascade", "--proxy", "meco"], "drop --proxy"),
    (["--strategy", "evolution", "--workers", "2"], "one process"),
    (["--stages", "random:flops"], "needs --strategy cascade"),
    (["--strategy", "evolution", "--tournament", "30"], "exceeds --population"),
    (["--strategy", "cascade", "--eta", "1"], "eta"),
    (["--strategy", "cascade", "--stages", "random:flops,gtn@8"], "meta-train"),
])
def test_strategy_bad_input_is_one_line(tmp_path, fake_mnist, args, needle):
    base = ["search", "--space", "nb201", "--dataset", "mnist", "--data-dir", str(fake_mnist),
            "--out", str(tmp_path / "s"), "--budget", "4"]
    if "--proxy" not in args and "cascade" not in args:
        base += ["--proxy", "flops"]
    r = runner.invoke(cli.app, base + args)
    assert r.exit_code != 0
    text = r.output + r.stderr
    assert needle in text and "Traceback" not in text, text


def _cascade_cfg(fake_mnist, out, **kw):
    over = dict(space="nb201", dataset="mnist", data_dir=str(fake_mnist), out=str(out),
                strategy="cascade", stages=("evolution:params", "real@3/2x1"), channels=2,
                cells=1, eval_subset=16, budget=6, eta=3.0, population=3, tournament=2,
                real_batch_size=8, program="exact")
    over.update(kw)
    return build_config(SearchConfig, "tiny", over)


def test_tiny_cascade_end_to_end_and_resumed_after_a_kill(fake_mnist, tmp_path, monkeypatch):
    full = lib.search(_cascade_cfg(fake_mnist, tmp_path / "full"))
    assert full["strategy"] == "cascade" and full["per_stage"][0]["scored"] == 6
    assert full["per_stage"][1]["scored"] == 2
    best = full["best"]
    assert best["stage"] == "real@3/2x1" and set(best["scores"]) == {"evolution:params/2x1",
                                                                      "real@3/2x1"}
    with open(tmp_path / "full" / "leaderboard.csv") as f:
        board = list(csv.DictReader(f))
    assert board[0]["arch"] == best["genotype"] and board[0]["stage"] == "real@3/2x1"
    assert len(board) == 6 and len({r["arch"] for r in board}) == 6
    top1 = json.loads((tmp_path / "full" / "top" / "01.json").read_text())
    assert top1["arch"] == best["genotype"] and top1["sizes"]["channels"] == 2
    with sqlite3.connect(tmp_path / "full" / "results.sqlite") as db:
        ev = db.execute("SELECT genotype, proxy, fidelity FROM evaluations").fetchall()
    assert len(ev) == len(set(ev))
    assert sum(1 for _, p, f in ev if p == "real" and f == "s3.c2n1") == 2

    # killed in the second stage, then resumed by the same command
    real_score = driver.Evaluations._score
    calls = {"n": 0}

    def killing(self, genotype, g, objective, missing):
        if objective.proxy == "real":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return real_score(self, genotype, g, objective, missing)

    monkeypatch.setattr(driver.Evaluations, "_score", killing)
    with pytest.raises(KeyboardInterrupt):
        lib.search(_cascade_cfg(fake_mnist, tmp_path / "killed"))
    monkeypatch.setattr(driver.Evaluations, "_score", real_score)
    again = lib.search(_cascade_cfg(fake_mnist, tmp_path / "killed"))
    assert again["best"] == best and again["scored_now"] == 1  # only what was left


def test_cascade_through_the_cli_with_a_time_budget(fake_mnist, tmp_path):
    out = tmp_path / "t"
    r = runner.invoke(cli.app, [
        "search", "--space", "nb201", "--dataset", "mnist", "--data-dir", str(fake_mnist),
        "--strategy", "cascade", "--stages", "random:flops,real@2/2x1", "--channels", "2",
        "--cells", "1", "--eval-subset", "16", "--real-batch-size", "8", "--program", "exact",
        "--time-budget", "25", "--out", str(out), "--preset", "tiny", "--json"])
    assert r.exit_code == 0, r.output + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["genotype"] and summary["per_stage"][0]["scored"] >= 1
    assert summary["wall_seconds"] < 25 + 60  # the last evaluation may run past the budget


def test_random_strategy_rows_are_unchanged_and_a_redrawn_genotype_is_copied(fake_mnist,
                                                                             tmp_path):
    """--strategy random is today's search: architecture i is the i-th given (or drawn), and a
    genotype drawn again is not scored again (its row copies the first one's scores)."""
    archs = ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
             "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    cfg = build_config(SearchConfig, "tiny", dict(
        space="nb201", dataset="mnist", data_dir=str(fake_mnist), proxies=("real", "params"),
        real_steps=2, real_batch_size=8, eval_subset=16, archs=archs + archs[:1],
        out=str(tmp_path / "r"), channels=2, cells=1, program="exact"))
    summary = lib.search(cfg)
    with sqlite3.connect(tmp_path / "r" / "results.sqlite") as db:
        rows = db.execute("SELECT idx, genotype, params, real_score, seconds FROM results "
                          "ORDER BY idx").fetchall()
        ev = db.execute("SELECT genotype, proxy, fidelity FROM evaluations").fetchall()
    assert [r[1] for r in rows] == list(archs + archs[:1])
    assert rows[2][2:4] == rows[0][2:4] and rows[2][4] == 0.0
    assert sorted(ev) == sorted((g, p, f) for g in archs for p, f in (
        ("real", "s2.c2n1"), ("params", "c2n1"), ("flops", "c2n1")))
    assert summary["best"]["genotype"] == summary["best_arch"]
    assert summary["best"]["stage"] == "real"
