"""The GTN core at tiny shapes: layers, teacher, unroll and the exact meta-gradient."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gtn_nas.config import MetaTrainConfig, build_config
from gtn_nas.errors import ConfigError
from gtn_nas.core.generator import make_generator
from gtn_nas.core.learners import MLP, learner_from_module, make_learner
from gtn_nas.core.learners import fixed_source
from gtn_nas.meta import exact_meta_step
from gtn_nas.meta.outer import init_meta_state
from gtn_nas.meta.estimator import make_meta_loss
from gtn_nas.core.nn import MeanOnlyBN, WNConv, WNDense
from gtn_nas.core.teacher import CURRICULA, Teacher

SHAPE = (8, 8, 1)
MEAN, STD = (0.5,), (0.25,)


def tiny_setup(curriculum="full", steps=3, learn_labels=False, **cfg_kw):
    cfg = build_config(MetaTrainConfig, "tiny",
                       dict(inner_steps=steps, batch_size=4, noise_dim=3, meta_batch_size=4,
                            curriculum=curriculum, learn_labels=learn_labels, **cfg_kw))
    teacher = Teacher(make_generator("mlp", SHAPE, 8), curriculum, steps, 4, 3, 10, learn_labels)
    learner = learner_from_module("mlp", MLP(10, (8,)), SHAPE)
    return cfg, teacher, fixed_source(learner)


def fake_data(key, n=32):
    k1, k2 = jax.random.split(key)
    images = jax.random.randint(k1, (n, *SHAPE), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(k2, (n,), 0, 10)
    return images, labels


def test_weight_norm_init_equals_v(key):
    x = jnp.ones((2, 5))
    params = WNDense(3).init(key, x)["params"]
    np.testing.assert_allclose(params["g"], jnp.linalg.norm(params["v"], axis=0), rtol=1e-6)
    y = WNDense(3).apply({"params": params}, x)
    np.testing.assert_allclose(y, x @ params["v"] + params["bias"][None], rtol=1e-5)
    # Scaling v leaves the function unchanged: only the direction of v matters.
    scaled = dict(params, v=params["v"] * 7.0)
    np.testing.assert_allclose(WNDense(3).apply({"params": scaled}, x), y, rtol=1e-5)
    conv = WNConv(4).init(key, jnp.ones((1, 5, 5, 2)))["params"]
    assert conv["v"].shape == (3, 3, 2, 4) and conv["g"].shape == (4,)


def test_mean_only_bn_semantics(key):
    bn = MeanOnlyBN()
    x = jax.random.normal(key, (6, 4)) + 3.0
    variables = bn.init(key, x, train=True)
    assert np.all(variables["batch_stats"]["mean"] == 0)
    params = {"params": {"bias": jnp.arange(4.0)}}
    y, upd = bn.apply({**params, "batch_stats": variables["batch_stats"]}, x, train=True,
                      mutable=["batch_stats"])
    np.testing.assert_allclose(upd["batch_stats"]["mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(y, x - x.mean(0)[None] + jnp.arange(4.0)[None], rtol=1e-5, atol=1e-6)
    # Eval mode subtracts the stored mean of the last train batch, not the eval batch's own.
    x2 = x * 2.0
    y2 = bn.apply({**params, "batch_stats": upd["batch_stats"]}, x2, train=False)
    np.testing.assert_allclose(y2, x2 - x.mean(0)[None] + jnp.arange(4.0)[None], rtol=1e-5, atol=1e-6)

    # The stored mean is differentiable: the eval output depends on the train batch through it.
    def eval_out(train_x):
        _, u = bn.apply({**params, "batch_stats": variables["batch_stats"]}, train_x, train=True,
                        mutable=["batch_stats"])
        return jnp.sum(bn.apply({**params, "batch_stats": u["batch_stats"]}, x2, train=False))

    g = jax.grad(eval_out)(x)
    # d/dx_train of sum over 6 eval rows of (x2 - mean): -6 * (1/6) per element.
    np.testing.assert_allclose(g, -jnp.ones_like(x), rtol=1e-5)


@pytest.mark.parametrize("curriculum", CURRICULA)
def test_curriculum_variants(curriculum, key):
    _, teacher, _ = tiny_setup(curriculum)
    meta = teacher.init(key)
    x1, y1 = teacher.generate(meta, jax.random.PRNGKey(1))
    x2, _ = teacher.generate(meta, jax.random.PRNGKey(2))
    assert x1.shape == (3, 4, *SHAPE) and y1.shape == (3, 4, 10)
    assert float(jnp.max(jnp.abs(x1))) < 2.0  # tanh x 2
    same = bool(jnp.allclose(x1, x2))
    assert same == (curriculum == "full"), "only the full curriculum ignores the step key"
    if curriculum == "full":
        np.testing.assert_array_equal(jnp.argmax(y1, -1).reshape(-1), np.arange(12) % 10)
    assert ("z" in meta) == (curriculum != "none")


def test_learned_labels_get_gradient(key):
    cfg, teacher, source = tiny_setup(learn_labels=True)
    meta = teacher.init(key)
    images, labels = fake_data(key)
    loss = make_meta_loss(cfg, teacher, source, MEAN, STD)
    grads = jax.grad(lambda m: loss(m, None, key, images, labels)[0])(meta)
    assert float(jnp.abs(grads["labels"]).sum()) > 0


@pytest.mark.parametrize("every", [2])  # U=2 of T=4: intermediate and final losses both present
def test_remat_levels_give_the_same_meta_gradient(every, key):
    grads = {}
    for remat in ("none", "step", "nested"):
        cfg, teacher, source = tiny_setup(steps=4, remat=remat, intermediate_every=every)
        meta = teacher.init(key)
        images, labels = fake_data(key)
        loss = make_meta_loss(cfg, teacher, source, MEAN, STD)
        grads[remat] = jax.jit(jax.grad(lambda m: loss(m, None, key, images, labels)[0]))(meta)
    for remat in ("step", "nested"):
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                               grads["none"], grads[remat])
    # Every meta-parameter receives gradient, the first step's learning rate included.
    assert float(jnp.abs(grads["none"]["log_lr"][0])) > 0
    assert float(jnp.abs(grads["none"]["z"]).sum()) > 0


def test_meta_gradient_matches_finite_differences_float64(key):
    with jax.enable_x64(True):
        cfg, teacher, source = tiny_setup(steps=3, intermediate_every=1)
        meta = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), teacher.init(key))
        images, labels = fake_data(key)
        loss = make_meta_loss(cfg, teacher, source, MEAN, STD)

        def f(log_lr0):
            m = dict(meta, log_lr=meta["log_lr"].at[0].set(log_lr0))
            return loss(m, None, key, images, labels)[0]

        x0 = meta["log_lr"][0]
        analytic = jax.grad(f)(x0)
        eps = 1e-5
        numeric = (f(x0 + eps) - f(x0 - eps)) / (2 * eps)
        assert analytic.dtype == jnp.float64
        assert abs(float(analytic)) > 1e-6
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


def test_meta_step_same_seed_same_result_and_skips_nonfinite(key):
    cfg, teacher, source = tiny_setup()
    images, labels = fake_data(key)
    step = jax.jit(exact_meta_step(cfg, teacher, source, MEAN, STD))
    s1, m1 = step(init_meta_state(cfg, teacher, key), None, jax.random.PRNGKey(5), images, labels)
    s2, m2 = step(init_meta_state(cfg, teacher, key), None, jax.random.PRNGKey(5), images, labels)
    jax.tree_util.tree_map(np.testing.assert_array_equal, s1, s2)
    assert bool(m1["finite"]) and int(s1.step) == 1
    # A different step key gives a different update (fresh learner init, real batches).
    s3, _ = step(init_meta_state(cfg, teacher, key), None, jax.random.PRNGKey(6), images, labels)
    assert not np.allclose(s1.meta_params["z"], s3.meta_params["z"])
    # A non-finite meta-gradient leaves the meta-parameters and optimiser state untouched.
    bad = dataclasses.replace(cfg, init_lr=1e38, lr_max=0.0)  # the teacher's is unbounded
    step_bad = jax.jit(exact_meta_step(bad, dataclasses.replace(teacher, init_lr=1e38), source, MEAN, STD))
    s0 = init_meta_state(bad, dataclasses.replace(teacher, init_lr=1e38), key)
    s4, m4 = step_bad(s0, None, jax.random.PRNGKey(5), images, labels)
    assert not bool(m4["finite"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, s4.meta_params, s0.meta_params)
    assert int(s4.step) == 1


def test_multiple_learners_average(key):
    cfg, teacher, source = tiny_setup(num_learners=3)
    images, labels = fake_data(key)
    loss = make_meta_loss(cfg, teacher, source, MEAN, STD)
    meta = teacher.init(key)
    total, metrics = loss(meta, None, key, images, labels)
    assert np.isfinite(float(total)) and set(metrics) >= {"meta_loss", "final_loss", "train_acc"}


@pytest.mark.parametrize("name,shape", [("base_fc", (28, 28, 1)), ("base_larger2", (32, 32, 3)),
                                        ("mlp", (28, 28, 1)), ("linear", (28, 28, 1))])
def test_fixed_learners_build(name, shape, key):
    learner = make_learner(name, shape, 10, width=8 if name != "linear" else None)
    params, stats = learner.init(key)
    x = jax.random.normal(key, (3, *shape))
    logits, new_stats = learner.apply(params, stats, x, True)
    assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
    assert jax.tree_util.tree_structure(new_stats) == jax.tree_util.tree_structure(stats)


def test_paper_generator_shapes(key):
    for shape in [(28, 28, 1), (32, 32, 3)]:
        gen = make_generator("conv", shape, 16)
        z, y = jnp.ones((2, 3, 5)), jnp.ones((2, 3, 10))
        params = gen.init(key, z, y)
        x = gen.apply(params, z, y)
        assert x.shape == (2, 3, *shape)


@pytest.mark.parametrize("kernel,strides,padding", [
    ((3, 3, 1, 4), (1, 1), "SAME"), ((3, 3, 3, 5), (2, 2), "SAME"),
    ((1, 1, 4, 3), (2, 2), "VALID"), ((1, 3, 2, 3), (1, 2), ((0, 0), (1, 1))),
    ((3, 3, 2, 2), (2, 2), ((1, 1), (1, 1)))])
def test_conv_as_slices_equals_xla_conv_to_second_order(kernel, strides, padding, key, monkeypatch):
    """The im2col form (gtn_nas.core.nn.spatial) is the same function as XLA's convolution, and so are
    the derivatives meta-training takes of it: the gradient of a weight gradient. So is what
    ``conv2d`` computes without slices (XLA's op, or a matmul for a 1x1 kernel)."""
    from gtn_nas.core.nn.spatial import conv2d, conv2d_channel_major

    kx, kw = jax.random.split(key)

    def reference(x, w):  # XLA's own op, whatever GTN_NAS_CONV says
        return jax.lax.conv_general_dilated(x, w, strides, padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def nhwc(x, w):
        return conv2d(x, w, strides, padding, slices=True)

    def cnhw(x, w):  # the channel-major form, given and giving NHWC here
        y = conv2d_channel_major(jnp.transpose(x, (3, 0, 1, 2)), w, strides, padding)
        return jnp.transpose(y, (1, 2, 3, 0))

    def second_order(conv):
        def f(x, w):
            inner = lambda w: jnp.sum(jnp.tanh(conv(x, w)) ** 2)
            return jnp.sum(jnp.sin(jax.grad(inner)(w))), conv(x, w)
        return f

    results = {}
    with jax.enable_x64(True):  # float64: the comparison is of the functions, not of float32 rounding
        x = jax.random.normal(kx, (2, 7, 6, kernel[2]), jnp.float64)
        w = jax.random.normal(kw, kernel, jnp.float64)
        for impl, conv in (("reference", reference), ("xla", nhwc), ("slices", nhwc),
                           ("channel-major", cnhw)):
            monkeypatch.setenv("GTN_NAS_CONV", "slices" if impl in ("slices", "channel-major")
                               else "xla")
            (val, y), grads = jax.value_and_grad(second_order(conv), (0, 1), has_aux=True)(x, w)
            results[impl] = (y, val, *grads)
    for impl in ("xla", "slices", "channel-major"):
        for a, b in zip(results["reference"], results[impl]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    monkeypatch.setenv("GTN_NAS_CONV", "fast")
    with pytest.raises(ConfigError, match="GTN_NAS_CONV"):
        conv2d(x, w, strides, padding)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 6, 2)])
def test_pool_as_slices_equals_xla_pool_to_second_order(shape, key, monkeypatch):
    """The learners' 3x3/2 max pooling as maxima of (even, odd) pairs is XLA's windowed max, and
    so are the derivatives meta-training takes: the input and weight gradients of a function of
    a conv learner's weight gradient (odd sizes fall back to XLA's op)."""
    from gtn_nas.core.nn.spatial import conv2d, max_pool_3x3s2

    kx, kw = jax.random.split(key)

    def second_order(x, w):
        inner = lambda w: jnp.sum(jnp.tanh(max_pool_3x3s2(conv2d(x, w, slices=True), slices=True)) ** 2)
        return jnp.sum(jnp.sin(jax.grad(inner)(w))), max_pool_3x3s2(x, slices=True)

    results = {}
    with jax.enable_x64(True):
        x = jax.random.normal(kx, shape, jnp.float64)  # no exact ties
        w = jax.random.normal(kw, (3, 3, shape[-1], 4), jnp.float64)
        for impl in ("xla", "slices"):
            monkeypatch.setenv("GTN_NAS_CONV", impl)
            (val, y), grads = jax.value_and_grad(second_order, (0, 1), has_aux=True)(x, w)
            results[impl] = (y, val, *grads)
        ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                    ((0, 0), (1, 1), (1, 1), (0, 0)))
    np.testing.assert_array_equal(results["slices"][0], ref)
    for a, b in zip(results["xla"], results["slices"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # exact ties (a zero background): each window's gradient goes to one input, the total is XLA's
    zeros = jnp.zeros((1, 4, 4, 1))
    monkeypatch.setenv("GTN_NAS_CONV", "slices")
    g = jax.grad(lambda x: jnp.sum(max_pool_3x3s2(x, slices=True)))(zeros)
    assert float(jnp.sum(g)) == pytest.approx(4.0)


@pytest.mark.parametrize("axis", [1, 2])
def test_pool_pick_and_unpick_are_each_others_transpose(axis, key):
    """The pooling's linear pick and its written-out transpose: <pick(t), g> = <t, unpick(g)>,
    and each one's VJP is the other (what every derivative order of the pooling runs on)."""
    from gtn_nas.core.nn.spatial import _pick, _unpick, _window_winners

    kx, kt, kg = jax.random.split(key, 3)
    with jax.enable_x64(True):
        x = jax.random.normal(kx, (2, 8, 6, 3), jnp.float64)
        x = x.at[:, 2:4, 2:4].set(0.0)  # some exact ties too
        masks = _window_winners(x, axis)
        t = jax.random.normal(kt, x.shape, jnp.float64)
        n = x.shape[axis] // 2
        g = jax.random.normal(kg, x.shape[:axis] + (n,) + x.shape[axis + 1:], jnp.float64)
        picked, pick_vjp = jax.vjp(lambda t: _pick(t, axis, *masks), t)
        unpicked, unpick_vjp = jax.vjp(lambda g: _unpick(g, axis, *masks), g)
        assert picked.shape == g.shape and unpicked.shape == t.shape
        np.testing.assert_allclose(jnp.vdot(picked, g), jnp.vdot(t, unpicked), rtol=1e-12)
        np.testing.assert_array_equal(pick_vjp(g)[0], unpicked)
        np.testing.assert_array_equal(unpick_vjp(t)[0], picked)
        # every window sends its cotangent to exactly one member
        np.testing.assert_allclose(jnp.sum(unpicked), jnp.sum(g), rtol=1e-12)


@pytest.mark.parametrize("name", ["base_fc", "base_larger2"])
def test_channel_major_learners_equal_nhwc_ones_to_second_order(name, key, monkeypatch):
    """The fixed conv learners computing in CNHW are the NHWC learners, with the same parameters:
    outputs, batch statistics and the gradient of a function of the weight gradient (float64)."""
    from gtn_nas.core.learners import make_learner

    results = {}
    with jax.enable_x64(True):
        x = jax.random.normal(key, (3, 8, 8, 2), jnp.float64)
        for layout in ("nhwc", "cnhw"):
            monkeypatch.setenv("GTN_NAS_LAYOUT", layout)
            learner = make_learner(name, (8, 8, 2), 10, 2)
            params, stats = learner.init(jax.random.PRNGKey(0))
            params = jax.tree.map(lambda a: a.astype(jnp.float64), params)

            def loss(p):
                logits, new_stats = learner.apply(p, stats, x, True)
                return jnp.sum(jnp.sin(logits)), new_stats

            (val, new_stats) = loss(params)
            meta = jax.grad(lambda p: sum(jnp.sum(jnp.sin(g)) for g in
                                          jax.tree.leaves(jax.grad(lambda q: loss(q)[0])(p))))(params)
            results[layout] = (params, val, new_stats, meta)
    a, b = results["nhwc"], results["cnhw"]
    assert jax.tree.structure(a[0]) == jax.tree.structure(b[0])
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
    monkeypatch.setenv("GTN_NAS_LAYOUT", "nchw")
    with pytest.raises(ConfigError, match="GTN_NAS_LAYOUT"):
        make_learner(name, (8, 8, 2), 10, 2).init(jax.random.PRNGKey(0))


def test_conv_learners_prefer_slices_on_cpu_only(monkeypatch):
    from gtn_nas.core.nn.spatial import use_slices

    monkeypatch.setenv("GTN_NAS_CONV", "auto")
    assert use_slices(True) == (jax.default_backend() == "cpu") and not use_slices(False)
    monkeypatch.setenv("GTN_NAS_CONV", "slices")
    assert use_slices(False)
    monkeypatch.setenv("GTN_NAS_CONV", "xla")
    assert not use_slices(True)


def test_estimator_and_outer_update_are_separate_pure_pieces(key):
    """The trainer's roles apart (learned_optimization's shape): ``full_backprop`` estimates
    (loss, meta-gradient, metrics) from any meta-loss; ``guarded_update`` applies a gradient
    through optax, or skips it; a hand-made estimator slots into ``make_meta_step``."""
    from gtn_nas.meta.estimator import full_backprop
    from gtn_nas.meta.outer import guarded_update, make_meta_step, outer_optimizer

    cfg, teacher, source = tiny_setup()
    images, labels = fake_data(key)
    meta_loss = make_meta_loss(cfg, teacher, source, MEAN, STD)
    estimate = full_backprop(meta_loss)
    ms = init_meta_state(cfg, teacher, key)
    loss, grads, metrics = estimate(ms.meta_params, None, key, images, labels)
    want = jax.grad(lambda m: meta_loss(m, None, key, images, labels)[0])(ms.meta_params)
    jax.tree_util.tree_map(np.testing.assert_allclose, grads, want)
    assert float(loss) == float(metrics["meta_loss"])

    opt = outer_optimizer(cfg)
    new, decided = guarded_update(cfg, opt, ms, loss, grads)
    assert bool(decided["finite"]) and not bool(decided["spike"]) and int(new.step) == 1
    assert not np.allclose(new.meta_params["z"], ms.meta_params["z"])
    nan = jax.tree_util.tree_map(lambda g: g * jnp.nan, grads)
    kept, decided = guarded_update(cfg, opt, ms, loss, nan)
    assert not bool(decided["finite"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, kept.meta_params, ms.meta_params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, kept.opt_state, ms.opt_state)

    def zero_estimate(meta, arch, k, x, y):  # another estimator behind the same signature
        return jnp.float32(0.0), jax.tree_util.tree_map(jnp.zeros_like, meta), {}

    still, m = jax.jit(make_meta_step(cfg, teacher, zero_estimate))(ms, None, key, images, labels)
    assert bool(m["finite"]) and float(m["grad_norm"]) == 0.0
    jax.tree_util.tree_map(np.testing.assert_allclose, still.meta_params, ms.meta_params)
