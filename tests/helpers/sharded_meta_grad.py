"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (the device count
is fixed when JAX starts, so the test process itself cannot do it). Prints one JSON line."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.core import distributed as dist
from gtn_nas.commands.meta_train import meta_train
from gtn_nas.meta.estimator import make_meta_loss
from gtn_nas.meta.gtn import build_learner_source, build_teacher
from gtn_nas.meta.outer import init_meta_state
from gtn_nas.config import MetaTrainConfig, build_config
from gtn_nas.errors import ConfigError


def main(data_dir: str, out: str) -> None:
    cfg = build_config(MetaTrainConfig, "tiny", dict(num_learners=4))
    teacher = build_teacher(cfg, (28, 28, 1), 10)
    source = build_learner_source(cfg, (28, 28, 1), 10)
    key = jax.random.PRNGKey(0)
    images = jax.random.normal(jax.random.PRNGKey(1), (256, 28, 28, 1))
    labels = jax.random.randint(jax.random.PRNGKey(2), (256,), 0, 10)
    meta = init_meta_state(cfg, teacher, key).meta_params

    def grad_fn(mesh):
        loss = make_meta_loss(cfg, teacher, source, 0.0, 1.0, None, mesh)
        return jax.jit(jax.grad(lambda m, k, x, y: loss(m, None, k, x, y)[0]))

    g1 = grad_fn(None)(meta, key, images, labels)
    mesh = dist.learner_mesh(4, 4)
    sharded = grad_fn(mesh)
    args = dist.replicate((meta, key, images, labels), mesh)
    g4 = sharded(*args)
    hlo = sharded.lower(*args).compile().as_text()
    diff = max(float(jnp.max(jnp.abs(np.asarray(a) - dist.to_host(b))))
               for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g4)))
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(g1))
    errors = []
    for devices, learners in ((8, 8), (4, 6)):
        try:
            dist.learner_mesh(devices, learners)
        except ConfigError as e:
            errors.append(str(e))
    # The whole command on the 4-device mesh against the same command on one device.
    runs = {}
    for devices in (1, 0):
        c = build_config(MetaTrainConfig, "tiny", dict(
            out=f"{out}/devices{devices}", data_dir=data_dir, num_learners=4, devices=devices,
            iterations=2, eval_every=0, checkpoint_every=2, log_every=1, samples_every=0))
        runs[devices] = meta_train(c)
    print(json.dumps({
        "devices": jax.device_count(), "max_diff": diff, "max_grad": scale,
        "all_reduce": hlo.count("all-reduce"), "errors": errors,
        "loss_1": runs[1]["final_meta_loss"], "loss_4": runs[0]["final_meta_loss"],
        "lr_1": runs[1]["inner_lr"], "lr_4": runs[0]["inner_lr"],
        "mesh_devices": runs[0]["runtime"]["mesh_devices"],
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
