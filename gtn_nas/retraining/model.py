"""The network of a genotype with the final-training options, and its fresh variables."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from search_spaces import get_space

from gtn_nas.config import RetrainConfig
from gtn_nas.search.archs import parse_arch

Variables = dict[str, Any]  # {"params": ..., "batch_stats": ...}


def resolve_sizes(cfg: RetrainConfig) -> RetrainConfig:
    """Fills in the fallback channels/cells so config.json holds concrete values."""
    sp = get_space(cfg.space or parse_arch(cfg.arch)[1])
    return dataclasses.replace(
        cfg, space=sp.name,
        channels=cfg.fallback_channels if cfg.channels is None else cfg.channels,
        cells=cfg.fallback_cells if cfg.cells is None else cfg.cells)


def build_model(cfg: RetrainConfig, input_shape, num_classes: int = 10,
                auxiliary: bool | None = None):
    """The Flax module of ``cfg.arch`` with the final-training options (BN momentum, drop-path,
    dropout, auxiliary head)."""
    genotype, name = parse_arch(cfg.arch, cfg.space)
    return get_space(name).build(
        genotype, cfg.channels, cfg.cells, num_classes, tuple(input_shape),
        bn_momentum=cfg.bn_momentum, drop_path=cfg.drop_path,
        auxiliary=cfg.auxiliary if auxiliary is None else auxiliary,
        activation=cfg.activation, dropout=cfg.dropout)


# Initialisation runs once, so its compiled speed is irrelevant, while XLA:CPU's optimising
# backend takes seconds per threefry draw (measured: 38 s CPU for a 2-channel NB201 net, 6 s
# without backend optimisation).
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.lru_cache(maxsize=16)
def _compiled_init(model, input_shape: tuple[int, ...]):
    x = jnp.zeros((1, *input_shape), jnp.float32)
    init = jax.jit(lambda k: model.init(k, x, train=False))
    lowered = init.lower(jax.ShapeDtypeStruct((2,), jnp.uint32))
    try:
        return lowered.compile(compiler_options=_QUICK_COMPILE)
    except Exception:  # a backend without these options
        return lowered.compile()


def init_variables(model, input_shape, key: jax.Array) -> Variables:
    """Fresh ``{"params", "batch_stats"}`` of ``model`` for images of ``input_shape`` (HWC)."""
    variables = _compiled_init(model, tuple(input_shape))(key)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


__all__ = ["Variables", "build_model", "init_variables", "resolve_sizes"]
