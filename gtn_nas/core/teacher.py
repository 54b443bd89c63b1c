"""The teacher: every meta-learned quantity of a GTN in one pytree, and how it yields batches.

meta_params = {
  "generator": generator parameters,
  "z":        learned curriculum noise, [T, B, noise_dim] (full, batch_shuffled) or
              [T*B, noise_dim] (all_shuffled); absent for `none` (fresh noise every step),
  "log_lr":   [T] inner learning rates, lr_t = exp(log_lr[t]) (unbounded, as the paper), or
  "lr_logit": [T] with ``lr_max`` > 0: lr_t = lr_max · sigmoid(lr_logit[t]),
  "log_mom":  [T] inner momentums, mom_t = exp(log_mom[t]) (unbounded: may exceed 1), or
  "mom_logit":[T] with ``mom_max`` > 0: mom_t = mom_max · sigmoid(mom_logit[t]),
  "labels":   [T, B, classes] soft labels, only when labels are learned,
}
Labels are fixed and balanced otherwise: step t's batch cycles through the classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gtn_nas.errors import ConfigError

CURRICULA = ("none", "all_shuffled", "batch_shuffled", "full")
MetaParams = dict[str, Any]


def check_schedule(init_lr: float, lr_max: float, init_momentum: float, mom_max: float) -> None:
    """The learned schedule starts inside its bounds (0: unbounded), its momentum below 1."""
    if lr_max and not init_lr < lr_max:
        raise ConfigError(f"init_lr ({init_lr}) must be below lr_max ({lr_max})")
    if mom_max and not init_momentum < mom_max:
        raise ConfigError(f"init_momentum ({init_momentum}) must be below momentum_max "
                          f"({mom_max})")
    if not 0 <= init_momentum < 1:
        raise ConfigError(f"init_momentum must be in [0, 1), got {init_momentum}")


@dataclass(frozen=True)
class Teacher:
    generator: nn.Module
    curriculum: str
    inner_steps: int  # T
    batch_size: int  # B
    noise_dim: int
    num_classes: int
    learn_labels: bool = False
    init_lr: float = 0.02
    init_momentum: float = 0.5
    # Bounds of the learned schedule (0: the paper's unbounded exp parametrisation). A momentum
    # above 1 or an lr past the edge of stability makes the unrolled loop chaotic and its
    # meta-gradient explode (benchmarks/RESULTS.md, Robustness); a sigmoid keeps them inside.
    lr_max: float = 0.0
    mom_max: float = 0.0

    def __post_init__(self):
        if self.curriculum not in CURRICULA:
            raise ConfigError(f"unknown curriculum {self.curriculum!r}; choose one of {', '.join(CURRICULA)}")
        check_schedule(self.init_lr, self.lr_max, self.init_momentum, self.mom_max)
        if self.learn_labels and self.curriculum == "none":
            raise ConfigError("learned labels need a curriculum (they are tied to fixed inputs)")

    def fixed_labels(self) -> jax.Array:
        """Balanced one-hot labels: (arange(T*B) mod classes) reshaped to [T, B]."""
        t, b = self.inner_steps, self.batch_size
        y = jnp.arange(t * b) % self.num_classes
        return jax.nn.one_hot(y.reshape(t, b), self.num_classes)  # [T, B, classes]

    def init(self, key: jax.Array) -> MetaParams:
        t, b, d = self.inner_steps, self.batch_size, self.noise_dim
        k_gen, k_z = jax.random.split(key)
        z0 = jnp.zeros((1, b, d))
        y0 = jnp.zeros((1, b, self.num_classes))
        meta: MetaParams = {"generator": self.generator.init(k_gen, z0, y0)["params"]}
        if self.curriculum in ("full", "batch_shuffled"):
            meta["z"] = jax.random.normal(k_z, (t, b, d))  # [T, B, noise_dim]
        elif self.curriculum == "all_shuffled":
            meta["z"] = jax.random.normal(k_z, (t * b, d))  # [T*B, noise_dim]
        if self.lr_max:
            meta["lr_logit"] = jnp.full((t,), _logit(self.init_lr / self.lr_max))
        else:
            meta["log_lr"] = jnp.full((t,), math.log(self.init_lr + 1e-6))
        if self.mom_max:
            meta["mom_logit"] = jnp.full((t,), _logit(self.init_momentum / self.mom_max))
        else:
            meta["log_mom"] = jnp.full((t,), math.log(self.init_momentum + 1e-6))
        if self.learn_labels:
            meta["labels"] = self.fixed_labels()
        return meta

    def inputs(self, meta: MetaParams, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The generator inputs (z [T, B, d], soft labels [T, B, classes]) for one unroll."""
        t, b, d = self.inner_steps, self.batch_size, self.noise_dim
        labels = meta["labels"] if self.learn_labels else self.fixed_labels()
        if self.curriculum == "full":
            return meta["z"], labels
        if self.curriculum == "batch_shuffled":
            idx = jax.random.randint(key, (t,), 0, t)  # a batch index per step, with replacement
            return meta["z"][idx], labels[idx]
        if self.curriculum == "all_shuffled":
            idx = jax.random.randint(key, (t, b), 0, t * b)  # samples from the whole pool
            return meta["z"][idx], labels.reshape(t * b, -1)[idx]
        k_z, k_y = jax.random.split(key)  # none: fresh noise and uniformly random labels
        y = jax.random.randint(k_y, (t, b), 0, self.num_classes)
        return jax.random.normal(k_z, (t, b, d)), jax.nn.one_hot(y, self.num_classes)

    def generate(self, meta: MetaParams, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """All T synthetic batches: images [T, B, H, W, C] and soft labels [T, B, classes]."""
        z, y = self.inputs(meta, key)
        x = self.generator.apply({"params": meta["generator"]}, z, y)
        return x, y

    def schedule(self, meta: MetaParams) -> tuple[jax.Array, jax.Array]:
        """The learned per-step inner learning rates and momentums, each [T]."""
        lrs = (self.lr_max * jax.nn.sigmoid(meta["lr_logit"]) if self.lr_max
               else jnp.exp(meta["log_lr"]))
        moms = (self.mom_max * jax.nn.sigmoid(meta["mom_logit"]) if self.mom_max
                else jnp.exp(meta["log_mom"]))
        return lrs, moms


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))
