"""The one optimiser builder: optional global-norm clip, then weight decay, then an update rule
driven by a cosine learning-rate schedule with an optional linear warm-up.

The outer loop of meta-training (Adam on the meta-gradient) and final training (SGD with
momentum, NAO/DARTS' recipe) are both this chain with another rule; clipping before weight
decay is PyTorch's order in NAO/DARTS.
"""

from __future__ import annotations

from typing import Callable

import optax

Rule = Callable[[optax.Schedule], optax.GradientTransformation]


def cosine_schedule(lr: float, steps: int, final_fraction: float, warmup: int = 0) -> optax.Schedule:
    """lr_t = lr·(f + (1 − f)(1 + cos(π t / (T − W))) / 2) after W linear warm-up steps."""
    schedule = optax.cosine_decay_schedule(lr, max(steps - warmup, 1), alpha=final_fraction)
    if warmup:
        schedule = optax.join_schedules(
            [optax.linear_schedule(lr / warmup, lr, warmup), schedule], [warmup])
    return schedule


def make_optimizer(rule: Rule, lr: float, steps: int, *, final_fraction: float = 0.0,
                   warmup: int = 0, grad_clip: float = 0.0, weight_decay: float = 0.0
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, its lr schedule): clip -> weight decay -> ``rule(schedule)``."""
    schedule = cosine_schedule(lr, steps, final_fraction, warmup)
    parts = []
    if grad_clip > 0:
        parts.append(optax.clip_by_global_norm(grad_clip))
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(rule(schedule))
    return optax.chain(*parts), schedule


__all__ = ["Rule", "cosine_schedule", "make_optimizer"]
