"""Search spaces: genotype strings, sampling, mutation, built networks, the NB201 shared program."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gtn_nas.errors import ArchitectureError
from gtn_nas.core.nn import BatchNorm, WNConv
from search_spaces import MicroGenotype, NB201Genotype, get_space
from gtn_nas.core.cost import count_flops, count_params
from search_spaces import micro, nb201
from search_spaces.base import SearchSpace

TINY_C, TINY_N = 4, 1
# Most tests share this shape (and a genotype) so eager-mode compilations are reused.
CIFAR = (32, 32, 3)


def _nn_layers_need_rank_promotion() -> bool:
    with jax.numpy_rank_promotion("raise"):
        try:
            x = jnp.zeros((2, 4, 4, 1))
            WNConv(2).init(jax.random.PRNGKey(0), x)
            bn = BatchNorm()
            bn.apply(bn.init(jax.random.PRNGKey(0), x, True), x, True, mutable=["batch_stats"])
        except ValueError:
            return True
    return False


@pytest.fixture(autouse=True, scope="module")
def _rank_promotion():
    """conftest raises on implicit rank promotion; gtn_nas.core.nn's layers broadcast [C] against NHWC
    (WNConv's scale, BatchNorm), so allow it only while those layers still need it."""
    if _nn_layers_need_rank_promotion():
        with jax.numpy_rank_promotion("allow"):
            yield
    else:
        yield


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """These tests compile many tiny networks once each: XLA's optimisation passes cost more
    than they save here (about halves this file's time)."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _variables(module, x, key, **kw):
    return module.init({"params": key, "dropout": key}, x, train=True, **kw)


def _train(module, variables, x, **kw):
    return module.apply(variables, x, train=True, mutable=["batch_stats"], **kw)


def _random_genotype(space):
    """A fixed random genotype; for NB201 one without 'none' edges (a cell whose output is
    constant would make the statistics checks vacuous)."""
    return next(g for g in (space.sample(jax.random.PRNGKey(i)) for i in range(100))
                if "none" not in getattr(g, "ops", ()))


def _images(shape, batch=2, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, *shape))


# ----------------------------------------------------------------------------- registry


def test_get_space_and_unknown_name():
    assert isinstance(get_space("nb201"), nb201.NB201Space)
    assert isinstance(get_space("MICRO"), micro.MicroSpace)
    assert get_space("nas-bench-201").name == "nb201"
    with pytest.raises(ArchitectureError, match="valid spaces: nb201, micro"):
        get_space("darts")


@pytest.mark.parametrize("name", ["nb201", "micro"])
def test_space_interface(name):
    space = get_space(name)
    assert isinstance(space, SearchSpace)
    assert space.defaults.channels > 0 and space.defaults.cells > 0
    g = space.from_str(space.example)
    assert g.to_str() == space.example
    assert hash(g) == hash(space.from_str(space.example))
    with pytest.raises(Exception):
        g.ops = ()  # frozen
    with pytest.raises(Exception):
        g.normal = ()


# ----------------------------------------------------------------------------- NB201 strings


def test_nb201_round_trip_and_order():
    g = NB201Genotype.from_str(nb201.EXAMPLE)
    assert g.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
                     "skip_connect", "nor_conv_3x3", "skip_connect")
    assert g.op(3, 1) == "nor_conv_3x3" and g.op(2, 1) == "avg_pool_3x3"
    assert str(g) == nb201.EXAMPLE
    assert nb201.decode(nb201.encode(g)) == g
    assert nb201.encode(g).dtype == np.int32


def test_nb201_enumeration():
    space = get_space("nb201")
    all_g = list(space.enumerate())
    assert len(all_g) == space.size == 15625
    assert len(set(all_g)) == 15625
    assert len({g.to_str() for g in all_g}) == 15625
    for k in (0, 1, 777, 15624):
        assert space.index(all_g[k]) == k and space.from_index(k) == all_g[k]
    assert all_g[0].ops == ("none",) * 6


def test_nb201_benchmark_strings(shared_data):
    path = shared_data / "nb201" / "nb201_cifar_accuracy.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, newline="") as f:
        strings = [row["ArchitectureString"] for row in csv.DictReader(f)]
    assert len(strings) == 15625
    space = get_space("nb201")
    parsed = {space.from_str(s) for s in strings}
    assert all(space.from_str(s).to_str() == s for s in strings)
    assert parsed == set(space.enumerate())


@pytest.mark.parametrize("bad, needle", [
    ("|conv_5x5~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
    ("|none~0|+|none~0|none~1|", "expected 3 node groups"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 lists 1 input edges, needs 2"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "should read from node 1"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "bad token 'none0'"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
])
def test_nb201_bad_strings(bad, needle):
    with pytest.raises(ArchitectureError) as err:
        get_space("nb201").from_str(bad)
    msg = str(err.value)
    assert needle in msg
    assert "example: |nor_conv_3x3~0|+" in msg and "ops are none, skip_connect" in msg
    assert repr(bad) in msg


def test_nb201_bad_genotype_values():
    with pytest.raises(ArchitectureError, match="6 edges"):
        NB201Genotype(("none",) * 5)
    with pytest.raises(ArchitectureError, match="unknown op 'sep_conv'"):
        NB201Genotype(("sep_conv",) + ("none",) * 5)
    with pytest.raises(ArchitectureError):
        nb201.decode([0, 1, 2, 3, 4, 5])


# ----------------------------------------------------------------------------- micro strings


def test_micro_round_trip_and_forms():
    space = get_space("micro")
    g = space.from_str(micro.EXAMPLE)
    assert g.normal[:4] == (0, 2, 1, 3) and len(g.reduce) == 20
    plain = "normal: " + " ".join(map(str, g.normal)) + " | reduce: " + \
        ",".join(map(str, g.reduce))
    assert space.from_str(plain) == g
    normal, reduce = g.to_official()
    assert normal[1] == 2 + 5 and MicroGenotype.from_official(normal, reduce) == g
    assert "n0 = conv_3x3(in0) + conv_1x3_3x1(in1)" in g.describe()
    with pytest.raises(ArchitectureError, match="cannot be enumerated"):
        next(iter(space.enumerate()))
    assert space.size == (720 ** 2 * 11 ** 10) ** 2


@pytest.mark.parametrize("bad, needle", [
    ("normal: 0 2 1 3 | reduce: 0 2 1 3", "normal cell has 4 integers, needs 20"),
    (micro.EXAMPLE.replace("normal: 0 2 1 3", "normal: 2 2 1 3"),
     "normal node 0 input a is 2, but node 0 may read only 0..1"),
    (micro.EXAMPLE.replace("reduce: 0 5 1 2", "reduce: 0 5 1 11"),
     "reduce node 0 input b has op 11"),
    (micro.EXAMPLE.replace("1 1 2 9", "1 x 2 9"), "'x' is not a non-negative integer"),
    ("0 2 1 3 1 1 2 9", "expected 'normal: <20 integers> | reduce: <20 integers>'"),
])
def test_micro_bad_strings(bad, needle):
    with pytest.raises(ArchitectureError) as err:
        get_space("micro").from_str(bad)
    assert needle in str(err.value)
    assert "example: normal: 0 2 1 3," in str(err.value)


# ----------------------------------------------------------------------------- sample / mutate


@pytest.mark.parametrize("name", ["nb201", "micro"])
def test_sample_is_deterministic_per_key(name):
    space = get_space(name)
    keys = [jax.random.fold_in(jax.random.PRNGKey(3), i) for i in range(8)]
    first = [space.sample(k) for k in keys]
    assert first == [space.sample(k) for k in keys]
    assert len(set(first)) == len(first)
    for g in first:
        assert space.from_str(g.to_str()) == g


def _flat(g):
    return g.ops if isinstance(g, NB201Genotype) else g.normal + g.reduce


@pytest.mark.parametrize("name", ["nb201", "micro"])
def test_mutate_changes_exactly_one_choice(name):
    space = get_space(name)
    g = space.sample(jax.random.PRNGKey(0))
    seen = set()
    for i in range(20):
        key = jax.random.PRNGKey(100 + i)
        child = space.mutate(g, key)
        assert child == space.mutate(g, key)
        diff = [a != b for a, b in zip(_flat(g), _flat(child))]
        assert sum(diff) == 1
        seen.add(diff.index(True))
        space.from_str(child.to_str())  # still valid
    assert len(seen) > 3
    assert _flat(space.sample(jax.random.PRNGKey(0))) == _flat(g)  # the parent is untouched


# ----------------------------------------------------------------------------- built networks


@pytest.mark.parametrize("name", ["nb201", "micro"])
@pytest.mark.parametrize("shape", [(28, 28, 1), CIFAR])
def test_build_init_apply_and_batch_stats(name, shape):
    """Random genotypes on MNIST- and CIFAR-shaped inputs. With momentum 0, train mode stores the
    batch's statistics and eval mode uses the stored ones, so eval on the same batch reproduces
    the train-mode output."""
    space = get_space(name)
    g = _random_genotype(space)
    module = space.build(g, TINY_C, TINY_N, 10, shape)
    x = _images(shape)
    variables = _variables(module, x, jax.random.PRNGKey(0))
    logits, updated = _train(module, variables, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                     variables["batch_stats"], updated["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))
    eval_same = module.apply({**variables, **updated}, x, train=False)
    np.testing.assert_allclose(eval_same, logits, rtol=1e-4, atol=1e-4)
    eval_init = module.apply(variables, x, train=False)
    assert bool(jnp.all(jnp.isfinite(eval_init)))
    assert float(jnp.max(jnp.abs(eval_init - logits))) > 1e-4
    assert count_params(module, shape) == sum(
        v.size for v in jax.tree_util.tree_leaves(variables["params"]))


@pytest.mark.parametrize("name", ["nb201", "micro"])
def test_drop_path_and_aux(name):
    space = get_space(name)
    g = _random_genotype(space)  # the genotype and shape of a build test: its compiles are cached
    shape = CIFAR
    x = _images(shape, batch=2)
    plain = space.build(g, TINY_C, TINY_N, 10, shape, bn_momentum=0.9)
    module = space.build(g, TINY_C, TINY_N, 10, shape, drop_path=0.5, auxiliary=True)
    variables = _variables(module, x, jax.random.PRNGKey(0))
    assert "aux_head" in variables["params"]
    base_vars = {"params": {k: v for k, v in variables["params"].items() if k != "aux_head"},
                 "batch_stats": {k: v for k, v in variables["batch_stats"].items()
                                 if k != "aux_head"}}

    def run(seed, **kw):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        (logits, aux), _ = _train(module, variables, x, rngs=rngs, **kw)
        return logits, aux

    a, aux = run(1)
    b, _ = run(2)
    assert aux.shape == (2, 10) and bool(jnp.all(jnp.isfinite(aux)))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4  # different masks
    np.testing.assert_array_equal(a, run(1)[0])  # same rng, same mask
    # drop_path_scale=0 (start of training) is the network without drop-path.
    (no_drop, _), stats = _train(module, variables, x, rngs={"dropout": jax.random.PRNGKey(1)},
                                 drop_path_scale=0.0)
    ref, slow_stats = _train(plain, base_vars, x)
    np.testing.assert_allclose(no_drop, ref, rtol=1e-5, atol=1e-5)
    # bn_momentum=0.9 (final training) keeps 90% of the old (initial, zero) statistic.
    np.testing.assert_allclose(slow_stats["batch_stats"]["stem_bn"]["mean"],
                               0.1 * stats["batch_stats"]["stem_bn"]["mean"], rtol=1e-5,
                               atol=1e-6)
    # Eval mode: no drop-path, no aux output, no rng needed.
    out = module.apply(variables, x, train=False)
    np.testing.assert_allclose(out, plain.apply(base_vars, x, train=False), rtol=1e-5, atol=1e-5)


def test_learner_interface():
    space = get_space("micro")
    learner = space.learner(_random_genotype(space), TINY_C, TINY_N, 10, CIFAR)
    params, state = learner.init(jax.random.PRNGKey(0))
    x = _images(CIFAR)
    logits, new_state = learner.apply(params, state, x, True)
    assert logits.shape == (2, 10)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    assert learner.name.startswith("micro:normal:")


def test_micro_cell_output_width():
    """A cell concatenates every state no node reads, cell inputs included (an unused input of a
    reduction cell goes through a FactorizedReduce)."""
    g = _random_genotype(get_space("micro"))
    reduce_unused_input = MicroGenotype.from_str(
        "normal: " + " ".join(map(str, g.normal)) +
        " | reduce: 1 2 1 3, 2 0 1 9, 3 3 2 7, 3 1 1 10, 1 6 4 4").reduce
    s = _images((32, 32, 12))  # the stem's output at C=4: cached compilations
    for arch, reduction in ((g.normal, False), (reduce_unused_input, True)):
        used = {arch[k] for k in range(0, 20, 2)}
        unused = [k for k in range(7) if k not in used]
        cell = micro.MicroCell(arch, 4, reduction)
        out, variables = cell.init_with_output(jax.random.PRNGKey(0), s, s, True)
        side = 16 if reduction else 32
        assert out.shape == (2, side, side, 4 * len(unused))
        if reduction:
            assert unused == [0, 5, 6] and "combine_0" in variables["params"]


# ----------------------------------------------------------------------------- NB201 sizes


def test_nb201_param_count_extremes():
    """The benchmark reports 0.073M..1.53M at C=16, N=5 on CIFAR-10 (WN adds one gain per
    output channel)."""
    space = get_space("nb201")
    counts = {name: nb201.active_param_count(NB201Genotype((name,) * 6))
              for name in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")}
    assert 70_000 < counts["none"] < 75_000
    assert 1_500_000 < counts["nor_conv_3x3"] < 1_560_000
    assert counts["none"] == counts["skip_connect"]
    for i in range(2):
        c = nb201.active_param_count(space.sample(jax.random.PRNGKey(i)))
        assert counts["none"] <= c <= counts["nor_conv_3x3"]


def test_count_flops():
    space = get_space("nb201")
    shape = (8, 8, 3)
    flops = [count_flops(space.build(NB201Genotype((op,) * 6), TINY_C, TINY_N, 10, shape), shape)
             for op in ("nor_conv_1x1", "nor_conv_3x3")]
    assert 0 < flops[0] < flops[1]
    # A 3x3 conv layer of the first stage alone: 8*8*4*4*9 multiply-adds.
    assert flops[1] - flops[0] > 5 * 2 * 8 * 8 * 4 * 4 * 8


# ----------------------------------------------------------------------------- NB201 shared


GENOTYPES = [
    nb201.EXAMPLE,
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|"
    "nor_conv_1x1~2|",
    # node 1 is zero: the pool and skip reading it are dropped, the conv reading node 2 is not
    "|none~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|",
]


@pytest.fixture(scope="module")
def shared_net():
    shape = CIFAR
    x = _images(shape)
    shared = nb201.build_shared(TINY_C, TINY_N, 10, shape)
    variables = shared.init(jax.random.PRNGKey(0), x, jnp.zeros(6, jnp.int32), train=True)
    return shape, x, shared, variables


def test_nb201_shared_matches_exact(shared_net):
    """One compiled shared program reproduces every genotype's exact network (train and eval
    logits, stored statistics), and the parameters of the ops a genotype does not use get exactly
    zero gradient."""
    shape, x, shared, shared_vars = shared_net
    labels = jnp.arange(2)

    @jax.jit
    def shared_step(variables, arch):
        def loss(params):
            learner = nb201.shared_learner(arch, TINY_C, TINY_N, 10, shape)
            logits, new_state = learner.apply(params, variables["batch_stats"], x, True)
            nll = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
            return nll, (logits, new_state)

        grads, (logits, new_state) = jax.grad(loss, has_aux=True)(variables["params"])
        return logits, {"batch_stats": new_state}, grads

    space = get_space("nb201")
    for k, s in enumerate(GENOTYPES):
        g = space.from_str(s)
        exact = space.build(g, TINY_C, TINY_N, 10, shape)
        exact_vars = nb201.subnet_variables(g, shared_vars)
        if k == 0:  # same key, same paths: the exact module's own init equals the extraction
            own = exact.init(jax.random.PRNGKey(0), x, train=True)
            assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(exact_vars)
            jax.tree_util.tree_map(np.testing.assert_array_equal, own, exact_vars)
        logits, upd = _train(exact, exact_vars, x)
        eval_logits = exact.apply({**exact_vars, **upd}, x, train=False)
        arch = jnp.asarray(nb201.encode(g))
        s_logits, s_upd, grads = shared_step(shared_vars, arch)
        s_eval = shared.apply({**shared_vars, **s_upd}, x, arch, train=False)  # eager: cheaper
        np.testing.assert_allclose(s_logits, logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s_eval, eval_logits, rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                               nb201.subnet_variables(g, s_upd), upd)
        _assert_unused_grads_zero(g, grads)
    assert shared_step._cache_size() == 1  # no recompilation per architecture


def _assert_unused_grads_zero(g, grads):
    used = nb201.subnet_variables(g, {"params": grads})["params"]
    used_paths = {p for p, _ in jax.tree_util.tree_flatten_with_path(used)[0]}
    n_zero = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if path not in used_paths:
            n_zero += 1
            assert not np.any(np.asarray(leaf)), path  # exactly zero
    assert n_zero > 0
    if g.op(1, 0) == "nor_conv_1x1":
        conv_v = used["cell_0_0"]["edge_1_0"]["nor_conv_1x1"]["conv"]["v"]
        assert float(jnp.max(jnp.abs(conv_v))) > 0


def test_nb201_shared_learner_init():
    """The shared learner's parameter layout does not depend on the architecture."""
    shapes = [jax.eval_shape(nb201.shared_learner(nb201.encode(g), TINY_C, TINY_N, 10,
                                                  CIFAR).init, jax.random.PRNGKey(0))
              for g in map(NB201Genotype.from_str, GENOTYPES[:2])]
    assert jax.tree_util.tree_structure(shapes[0]) == jax.tree_util.tree_structure(shapes[1])


@pytest.mark.slow
def test_nb201_shared_switch_mode_and_vmap(shared_net):
    """mode='switch' has the onehot supernet's parameters and function; the onehot supernet
    vmaps over different architectures in one program."""
    shape, x, onehot, variables = shared_net
    switch = nb201.build_shared(TINY_C, TINY_N, 10, shape, mode="switch")
    own = switch.init(jax.random.PRNGKey(0), x, jnp.zeros(6, jnp.int32), train=True)
    jax.tree_util.tree_map(np.testing.assert_array_equal, own, variables)
    archs = jnp.stack([jnp.asarray(nb201.encode(NB201Genotype.from_str(s))) for s in GENOTYPES])

    def forward(module, arch):
        return module.apply(variables, x, arch, train=True, mutable=["batch_stats"])[0]

    batched = jax.jit(jax.vmap(lambda a: forward(onehot, a)))(archs)
    run_switch = jax.jit(lambda a: forward(switch, a))
    for k, arch in enumerate(archs):
        np.testing.assert_allclose(run_switch(arch), forward(onehot, arch), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched[k], forward(onehot, arch), rtol=1e-5, atol=1e-5)

    def loss(params, arch):
        return jnp.sum(switch.apply({**variables, "params": params}, x, arch, train=True,
                                    mutable=["batch_stats"])[0])

    g = NB201Genotype.from_str(GENOTYPES[2])
    _assert_unused_grads_zero(g, jax.jit(jax.grad(loss))(variables["params"],
                                                         jnp.asarray(nb201.encode(g))))


def test_nb201_switch_mode_meta_gradient_equals_exact_network(shared_net):
    """Meta-training's supernet (switch mode, convolutions as slices: search_spaces/sources.py)
    gives the exact network's (XLA's convolutions, as the search trains it) second-order
    gradient (through one SGD step and a loss after it) on the ops it uses."""
    from search_spaces.sources import NB201_LAYERS, NB201_MODE

    shape, x, _, variables = shared_net
    g = NB201Genotype.from_str(GENOTYPES[2])
    switch = nb201.build_shared(TINY_C, TINY_N, 10, shape, mode=NB201_MODE, layers=NB201_LAYERS)
    exact = get_space("nb201").build(g, TINY_C, TINY_N, 10, shape)
    arch = jnp.asarray(nb201.encode(g))

    def meta_grad(forward, variables):
        def loss(params):
            out = forward({**variables, "params": params})
            return jnp.mean(out ** 2)

        def after_step(params):
            d = jax.grad(loss)(params)
            return loss(jax.tree_util.tree_map(lambda p, q: p - 0.1 * q, params, d))

        return jax.jit(jax.grad(after_step))(variables["params"])

    got = meta_grad(lambda v: switch.apply(v, x, arch, train=True, mutable=["batch_stats"])[0],
                    variables)
    want = meta_grad(lambda v: exact.apply(v, x, train=True, mutable=["batch_stats"])[0],
                     nb201.subnet_variables(g, variables))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           nb201.subnet_variables(g, {"params": got})["params"], want)
    assert (NB201_MODE, NB201_LAYERS) == ("switch", "gtn_meta")
    from search_spaces.ops import conv
    assert conv("gtn_meta", 4, (3, 3)).slices and not conv("gtn", 4, (3, 3)).slices


def test_nb201_no_ops_on_zero_nodes():
    """A pool of a node that is exactly zero is not in the program: XLA would constant-fold it at
    compile time (minutes on CPU for batch-sized shapes), for the same zero result."""
    space = get_space("nb201")
    shape = (8, 8, 1)
    x = _images(shape)
    zero_fed = "|none~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|skip_connect~2|"
    counts = []
    for s in (zero_fed, zero_fed.replace("none~0", "skip_connect~0")):
        net = space.build(space.from_str(s), TINY_C, TINY_N, 10, shape)
        variables = net.init(jax.random.PRNGKey(0), x, train=False)
        counts.append(jax.jit(lambda v: net.apply(v, x, train=False)).lower(variables)
                      .as_text().count("reduce_window"))
    assert counts[0] < counts[1]  # the same network but for the cell's two pools (on zeros)


# -- NB201 genotypes as composed per-op programs (search_spaces.nb201_composed) ----------------

COMPOSED_GENOTYPES = [
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    # node 1 exactly zero: a conv computed on zeros, a pool skipped, a skip skipped
    "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    # nodes 1 and 2 feed nothing: their edges get no gradient
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|none~2|",
    # the output node exactly zero: nothing before the last cell learns
    "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",
]


@pytest.mark.parametrize("genotype", COMPOSED_GENOTYPES)
def test_composed_nb201_trains_and_scores_as_the_genotypes_own_network(genotype):
    """Per-op programs strung together in Python give the genotype's own network's training
    (``unroll.sgd_step`` from the same init), eval accuracy and recalibrated statistics, up to
    float rounding; parameters that cannot reach the loss stay where they started."""
    from gtn_nas.core.images import normalize
    from gtn_nas.core.training import SteppedLearner
    from search_spaces.nb201_composed import ComposedNB201

    space, shape, steps = get_space("nb201"), (8, 8, 1), 3
    g = space.from_str(genotype)
    exact = SteppedLearner(space.learner(g, TINY_C, 1, 10, shape), (0.1,), (0.3,), 16)
    composed = ComposedNB201(space.build(g, TINY_C, 1, 10, shape), shape, (0.1,), (0.3,), 16)
    xs = jax.random.normal(jax.random.PRNGKey(1), (steps, 8, *shape))
    ys = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(2), (steps, 8, 10)))
    lrs, moms = jnp.array([0.3, 0.2, 0.1]), jnp.array([0.0, 0.5, 0.9])
    start = exact.init(jax.random.PRNGKey(0))
    a = exact.run(start, xs, ys, lrs, moms)
    b = composed.train(jax.random.PRNGKey(0), xs, ys, lrs, moms)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v, s in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                       jax.tree_util.tree_leaves(start)):
        np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-5)
        if np.array_equal(u, s):  # no gradient in the network's own training: none here either
            np.testing.assert_array_equal(v, s)
    moved = [not np.array_equal(u, s) for u, s in zip(jax.tree_util.tree_leaves(a.params),
                                                       jax.tree_util.tree_leaves(start.params))]
    assert any(moved)
    images = np.random.default_rng(0).integers(0, 256, (40, *shape), dtype=np.uint8)
    logits, _ = space.learner(g, TINY_C, 1, 10, shape).apply(a.params, a.stats,
                                                            normalize(images, (0.1,), (0.3,)), False)
    labels = np.asarray(jnp.argmax(logits, -1))  # the network's own answers: accuracy 1 for it
    assert exact.accuracy(a, images, labels) == 1.0
    assert composed.accuracy(b, images, labels) == 1.0
    ra, rb = exact.recalibrate(a, xs[0]), composed.recalibrate(b, xs[0])
    for u, v in zip(jax.tree_util.tree_leaves(ra.stats), jax.tree_util.tree_leaves(rb.stats)):
        np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-5)
