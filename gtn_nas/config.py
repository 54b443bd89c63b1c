"""One frozen, validated config per command, named presets, and JSON save/load.

Presets: ``tiny`` (tests, seconds), ``cpu`` (a useful GTN in about 15 minutes on 2 CPU cores),
``paper`` (the paper's MNIST setting, for a GPU). A command line builds its config as
preset values overridden by whatever options the user gave explicitly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gtn_nas.errors import ConfigError

PRESETS = ("tiny", "cpu", "paper")
C = TypeVar("C")


def _check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _check_positive(cfg, *names: str, allow_zero: bool = False) -> None:
    for n in names:
        v = getattr(cfg, n)
        if v is None or v < 0 or (v == 0 and not allow_zero):
            raise ConfigError(f"{n} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


@dataclass(frozen=True)
class MetaTrainConfig:
    """Everything `gtn-nas meta-train` needs; saved as run_dir/config.json."""

    out: str = "runs/gtn"
    dataset: str = "mnist"
    data_dir: str | None = None
    preset: str = "cpu"
    learner: str = "mlp"  # base_fc | base_larger2 | mlp | linear | nb201 | micro
    learner_width: int | None = None  # hidden width of the fixed learners / channels of NAS ones
    learner_cells: int = 1  # NAS learners: cells per stage
    arch_pool: int = 0  # NAS learners: sample from a fixed pool of this many (0: fresh every step)
    generator: str = "mlp"  # conv (the paper's) | mlp
    generator_hidden: int | None = None
    inner_steps: int = 32  # T
    batch_size: int = 128  # B, synthetic images per inner step
    noise_dim: int = 128
    curriculum: str = "full"  # none | all_shuffled | batch_shuffled | full
    learn_labels: bool = False
    init_lr: float = 0.02
    init_momentum: float = 0.5
    meta_lr: float = 0.02
    meta_b1: float = 0.9
    meta_b2: float = 0.999
    meta_eps: float = 1e-8
    final_relative_lr: float = 0.1
    grad_clip: float = 0.0  # global-norm clip of the meta-gradient; 0 = off
    iterations: int = 2000
    num_learners: int = 1  # fresh learners per outer step (vmapped, averaged)
    meta_batch_size: int = 128  # real images per meta-loss batch
    intermediate_every: int = 1  # U: real-data loss every U inner steps; 0 = final loss only
    intermediate_weight: float = 1.0
    remat: str = "step"  # none | step | nested
    augment: bool = False  # crop+flip of meta-loss batches (the paper's CIFAR setting)
    seed: int = 0
    split_seed: int = 0
    log_every: int = 50
    eval_every: int = 50  # train a fresh validation learner every N outer steps (0: only at end)
    eval_subset: int = 10_000  # validation images scored by that learner
    checkpoint_every: int = 100
    samples_every: int = 0  # curriculum PNG every N outer steps (0: only at the end)
    max_nonfinite: int = 5  # consecutive non-finite meta-gradients that stop the run

    def __post_init__(self):
        from gtn_nas.data.base import DATASETS
        from gtn_nas.generator import GENERATORS
        from gtn_nas.teacher import CURRICULA
        from gtn_nas.unroll import REMAT_LEVELS

        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("generator", self.generator, GENERATORS)
        _check_choice("curriculum", self.curriculum, CURRICULA)
        _check_choice("remat", self.remat, REMAT_LEVELS)
        _check_positive(self, "inner_steps", "batch_size", "noise_dim", "iterations", "num_learners",
                        "meta_batch_size", "meta_lr", "init_lr", "log_every", "checkpoint_every",
                        "max_nonfinite", "eval_subset", "learner_cells")
        _check_positive(self, "intermediate_every", "grad_clip", "eval_every", "samples_every",
                        "init_momentum", "arch_pool", allow_zero=True)
        if not 0 < self.final_relative_lr <= 1:
            raise ConfigError(f"final_relative_lr must be in (0, 1], got {self.final_relative_lr}")
        if self.remat == "nested" and self.inner_steps < 4:
            raise ConfigError("remat 'nested' needs at least 4 inner steps")


@dataclass(frozen=True)
class EvaluateConfig:
    """`gtn-nas evaluate`: fresh learners on GTN data vs the same learners on real data."""

    gtn: str = "runs/gtn"
    data_dir: str | None = None
    num_seeds: int = 5
    seed: int = 1000  # new seeds: none of the meta-training learners
    steps: int | None = None  # inner steps; default: the GTN's T
    real_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    real_momentums: tuple[float, ...] = (0.0, 0.5, 0.9)
    learner: str | None = None  # default: the GTN's meta-training learner
    out: str | None = None  # default: GTN_RUN/evaluate.json

    def __post_init__(self):
        _check_positive(self, "num_seeds")
        if self.steps is not None:
            _check_positive(self, "steps")
        if not self.real_lrs or not self.real_momentums:
            raise ConfigError("the real-data grid needs at least one learning rate and momentum")


PRESET_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "meta-train": {
        "tiny": dict(learner="mlp", learner_width=32, generator="mlp", generator_hidden=64,
                     inner_steps=4, batch_size=16, noise_dim=8, iterations=6, meta_batch_size=16,
                     log_every=2, eval_every=3, eval_subset=500, checkpoint_every=3),
        "cpu": dict(learner="mlp", learner_width=256, generator="mlp", generator_hidden=512,
                    inner_steps=32, batch_size=128, noise_dim=64, iterations=800, meta_lr=0.01,
                    meta_batch_size=128, intermediate_every=1, grad_clip=0.0, log_every=10,
                    eval_every=100, checkpoint_every=50),
        "paper": dict(learner="base_fc", generator="conv", inner_steps=32, batch_size=128,
                      noise_dim=128, meta_lr=0.02, iterations=2000, meta_batch_size=128,
                      intermediate_every=1, log_every=50, eval_every=50, checkpoint_every=100),
    },
}
# CIFAR-10 uses the paper's architecture-search settings on top of any preset (gtn-spec 1.8).
CIFAR_OVERRIDES = dict(meta_lr=0.004, meta_b2=0.9, meta_eps=1e-5, meta_batch_size=256,
                       intermediate_every=16, inner_steps=128, augment=True, learner="base_larger2")


def build_config(cls: type[C], command: str, preset: str, overrides: dict[str, Any]) -> C:
    """Preset values, then dataset defaults, then the user's explicit options (None = unset)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    values: dict[str, Any] = dict(PRESET_VALUES.get(command, {}).get(preset, {}))
    if command == "meta-train" and given.get("dataset") == "cifar10" and preset == "paper":
        values.update(CIFAR_OVERRIDES)
    values.update(given)
    values["preset"] = preset
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown config keys for {command}: {', '.join(sorted(unknown))}")
    try:
        return cls(**values)
    except TypeError as e:  # wrong types from a hand-edited JSON
        raise ConfigError(f"bad {command} config: {e}") from None


def save_config(cfg, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n")


def load_config(cls: type[C], path: Path) -> C:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path} is not valid JSON ({e})") from None
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"config {path} does not fit {cls.__name__}: {e}") from None
