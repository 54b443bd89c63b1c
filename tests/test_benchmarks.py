"""Benchmark helpers whose figures RESULTS.md relies on."""

import os
import jax
import jax.numpy as jnp

from benchmarks.scaling import _flops, unrolled_flops
from gtn_nas.core.learners import make_learner
from gtn_nas.core.unroll import init_inner_state, unroll


def test_unrolled_flops_count_every_inner_step():
    """XLA's cost analysis counts a scan body once; the unrolled lowering counts all T steps."""
    learner = make_learner("mlp", (8, 8, 1), 10, 16)
    state = init_inner_state(learner, jax.random.PRNGKey(0))
    steps = 8
    xs = jnp.ones((steps, 4, 8, 8, 1))
    ys = jax.nn.one_hot(jnp.arange(steps * 4).reshape(steps, 4) % 10, 10)
    lrs = moms = jnp.full((steps,), 0.1)

    def lower(scan_unroll=1):
        def loss(st):
            final, losses, _ = unroll(learner, st, xs, ys, lrs, moms, remat="none",
                                      scan_unroll=scan_unroll)
            return jnp.sum(losses)

        return jax.jit(jax.grad(loss)).lower(state)

    rolled = _flops(lower().cost_analysis())
    unrolled = unrolled_flops(lower)
    assert 0.8 * steps < unrolled / rolled < 1.2 * steps


def test_profile_attributes_the_meta_step_time_to_its_ops(fake_mnist):
    """benchmarks/profile_meta_step.py reads a real jax.profiler trace of the compiled meta-step
    and finds its ops in the HLO: the classes add up to the op total, the top ops are named."""
    from benchmarks.profile_meta_step import profile
    from gtn_nas.config import MetaTrainConfig, build_config
    from gtn_nas.io.data import load_dataset

    cfg = build_config(MetaTrainConfig, "tiny", dict(learner="base_fc", learner_width=2,
                                                     meta_batch_size=8))
    r = profile(cfg, load_dataset("mnist", fake_mnist), steps=1)
    assert r["op_ms_total"] > 0 and r["wall_s_per_step"] > 0 and r["gflop"] > 0
    total = sum(v["ms"] for v in r["by_class"].values())
    assert abs(total - r["op_ms_total"]) < 0.01 * r["op_ms_total"] + 0.5
    assert r["top_ops"] and all(t["ms"] >= 0 and t["calls"] >= 0 for t in r["top_ops"])
    assert any(k.startswith(("dot", "fusion")) for k in r["by_class"])


def test_ab_timing_compiles_variants_apart_and_steps_them_in_turn(fake_mnist):
    """benchmarks/ab_meta_step.py: each variant's environment is in force while it is traced
    (the two layouts of base_fc compute the same meta-loss), every variant is timed each round."""
    from benchmarks.ab_meta_step import compare
    from gtn_nas.config import MetaTrainConfig, build_config
    from gtn_nas.io.data import load_dataset

    cfg = build_config(MetaTrainConfig, "tiny", dict(learner="base_fc", learner_width=2,
                                                     meta_batch_size=8))
    variants = [{"GTN_NAS_LAYOUT": "nhwc"}, {"GTN_NAS_LAYOUT": "cnhw"}]
    rows = compare(cfg, load_dataset("mnist", fake_mnist), variants, rounds=2, log=lambda m: None)
    assert [r["env"] for r in rows] == variants and rows[0]["ratio_to_first"] == 1.0
    assert all(len(r["times_s"]) == 2 and min(r["times_s"]) > 0 for r in rows)
    assert abs(rows[0]["first_meta_loss"] - rows[1]["first_meta_loss"]) < 1e-4
    assert "GTN_NAS_LAYOUT" not in os.environ


def test_zero_cost_benchmark_verdict_uses_the_published_range():
    from benchmarks.zero_cost import verdict

    assert verdict("snip", 0.551) == "yes" and verdict("snip", 0.549) == "no"  # 0.60-0.65 ± 0.05
    assert verdict("naswot", 0.86) == "no" and verdict("flops", 0.9) == "-"
    assert verdict("jacov", None) == "-"
