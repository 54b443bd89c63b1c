"""One frozen, validated config per command, named presets, and JSON save/load.

Presets: ``tiny`` (tests, seconds), ``cpu`` (a useful GTN in about 15 minutes on 2 CPU cores),
``paper`` (the paper's MNIST setting, for a GPU). A command line builds its config as
preset values overridden by whatever options the user gave explicitly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gtn_nas.errors import ConfigError, GtnError

PRESETS = ("tiny", "cpu", "paper")
MICRO_POOL = 8  # micro meta-training's default architecture pool (each genotype compiles anew)
GTN_CHECKPOINTS = ("best", "last")  # which meta-parameters of a GTN run evaluate/search read
C = TypeVar("C")


def _check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


INT_LIMIT = 2**31 - 1  # counts become int32 step counters and PRNG folds inside JAX


def check_numbers(cfg, limits: dict[str, int] | None = None) -> None:
    """Every float option finite, every count within int32 and its own sane ``limits``.

    Run first in each config's ``__post_init__``: NaN passes every ``<``/``>`` test below it, and
    a NaN meta-lr or retrain lr would silently train to NaN."""
    import math

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        values = v if isinstance(v, (tuple, list)) else (v,)
        for x in values:
            if isinstance(x, bool):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{f.name} must be a finite number, got {x}")
            if isinstance(x, int) and abs(x) > INT_LIMIT:
                raise ConfigError(f"{f.name} must be at most {INT_LIMIT:,} in size, got {x}")
    for name, limit in (limits or {}).items():
        v = getattr(cfg, name)
        if v is not None and v > limit:
            raise ConfigError(f"{name} must be at most {limit:,}, got {v:,}")


def _check_positive(cfg, *names: str, allow_zero: bool = False, optional: bool = False) -> None:
    """``optional``: None (the default that the code fills in) passes."""
    for n in names:
        v = getattr(cfg, n)
        if v is None and optional:
            continue
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
    lr_max: float = 0.0  # learned inner lr = lr_max * sigmoid(.) (0: exp(.), unbounded, as the paper)
    momentum_max: float = 0.0  # learned momentum = momentum_max * sigmoid(.) (0: exp(.), unbounded)
    spike_factor: float = 0.0  # skip a meta-step whose gradient norm is > this x the running mean (0: off)
    rollback_drop: float = 0.0  # validation fall below the best that rolls back with half the meta-lr (0: off)
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
    devices: int = 1  # devices the learners are sharded over (0: all, across processes too)
    coordinator: str | None = None  # multi-process: HOST:PORT of process 0
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self):
        check_numbers(self, {"iterations": 10**7, "inner_steps": 100_000, "batch_size": 10**6,
                             "num_learners": 100_000, "meta_batch_size": 10**6})
        from gtn_nas.data.base import DATASETS
        from gtn_nas.generator import GENERATORS
        from gtn_nas.teacher import CURRICULA
        from gtn_nas.unroll import REMAT_LEVELS

        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("generator", self.generator, GENERATORS)
        _check_choice("curriculum", self.curriculum, CURRICULA)
        _check_choice("remat", self.remat, REMAT_LEVELS)
        from gtn_nas.learners import FIXED_LEARNERS

        if self.learner not in FIXED_LEARNERS:  # else a search space, checked before any run dir
            from search_spaces import SPACES, get_space

            try:
                get_space(self.learner)
            except GtnError:
                raise ConfigError(f"learner must be one of {', '.join(FIXED_LEARNERS + tuple(SPACES))}"
                                  f", got {self.learner!r}") from None
        _check_positive(self, "inner_steps", "batch_size", "noise_dim", "iterations", "num_learners",
                        "meta_batch_size", "meta_lr", "init_lr", "log_every", "checkpoint_every",
                        "max_nonfinite", "eval_subset", "learner_cells")
        _check_positive(self, "intermediate_every", "grad_clip", "eval_every", "samples_every",
                        "init_momentum", "arch_pool", "devices", "lr_max", "momentum_max",
                        "spike_factor", "rollback_drop", allow_zero=True)
        if self.spike_factor and self.spike_factor <= 1:
            raise ConfigError(f"spike_factor must be > 1 (or 0: off), got {self.spike_factor}")
        if not 0 <= self.rollback_drop < 1:
            raise ConfigError(f"rollback_drop is a fraction of accuracy in [0, 1), got {self.rollback_drop}")
        if self.momentum_max > 1:
            raise ConfigError(f"momentum_max must be at most 1, got {self.momentum_max}")
        _check_positive(self, "learner_width", "generator_hidden", optional=True)
        if not 0 < self.final_relative_lr <= 1:
            raise ConfigError(f"final_relative_lr must be in (0, 1], got {self.final_relative_lr}")
        if self.learner == "micro" and not self.arch_pool:
            # Each micro genotype has its own parameter shapes, so its own second-order program
            # (about a minute to compile on 2 cores): a fresh one every step would compile every
            # step. Meta-training draws from a fixed pool instead (--arch-pool to change it).
            object.__setattr__(self, "arch_pool", MICRO_POOL)
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
    curve: bool = True  # also accuracy after 1, 2, 4, ... steps (one compile per length)
    checkpoint: str = "best"  # the GTN's best-validation meta-parameters, or its last ones

    def __post_init__(self):
        check_numbers(self, {"num_seeds": 10_000, "steps": 100_000})
        _check_choice("checkpoint", self.checkpoint, GTN_CHECKPOINTS)
        _check_positive(self, "num_seeds")
        _check_positive(self, "steps", optional=True)
        if not self.real_lrs or not self.real_momentums:
            raise ConfigError("the real-data grid needs at least one learning rate and momentum")


PRESET_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "meta-train": {
        "tiny": dict(learner="mlp", learner_width=32, generator="mlp", generator_hidden=64,
                     inner_steps=4, batch_size=16, noise_dim=8, iterations=6, meta_batch_size=16,
                     lr_max=0.6, momentum_max=0.9, spike_factor=10.0,
                     log_every=2, eval_every=3, eval_subset=500, checkpoint_every=3),
        # Tuned on 2 cores (benchmarks/RESULTS.md): the final-loss-only meta-objective is ~40%
        # cheaper per step and learned faster than U=1; a large meta batch costs little there.
        # No remat: the MLP unroll fits in ~1.1 GB, and recomputing each step cost 30% more time.
        # A narrow generator (64 hidden) learned faster than wider ones (1024 < 512 < 256 < 128 <
        # 64 ~ 32 in validation accuracy at 300 steps) and is cheaper; Adam with b2 0.9 (the
        # paper's CIFAR setting) tracks the fast-changing meta-gradient scale better.
        # Robustness (benchmarks/RESULTS.md, Robustness): with the paper's unbounded exp schedule
        # some seeds and CPU kinds drove a step's momentum above 1 and the lr to the edge of
        # stability, and the meta-gradient exploded; bounded schedule, spike rejection and
        # rollback on a validation collapse keep every measured run from it.
        "cpu": dict(learner="mlp", learner_width=256, generator="mlp", generator_hidden=64,
                    inner_steps=32, batch_size=128, noise_dim=64, iterations=1100, meta_lr=0.02,
                    meta_b2=0.9, meta_eps=1e-5,
                    init_lr=0.1, meta_batch_size=1024, intermediate_every=0, grad_clip=10.0,
                    lr_max=0.6, momentum_max=0.9, spike_factor=10.0, rollback_drop=0.03,
                    log_every=10, eval_every=50, checkpoint_every=50, remat="none"),
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
    from gtn_nas.runs import write_atomic  # atomic: concurrent search workers read it

    write_atomic(Path(path), json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n")


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


# --- search and rank configs (issue #3) ---
SEARCH_PROXIES = ("gtn", "real", "params")
SEARCH_PROGRAMS = ("auto", "exact", "shared")
REAL_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class SearchConfig:
    """`gtn-nas search`: random search scored by proxies; saved as DIR/config.json.

    Architecture i of the search is ``space.sample`` of a key derived from
    ``fold_in(PRNGKey(seed), i)``. ``budget`` counts architectures (indices 0..budget-1; 0: no
    count limit), ``time_budget`` bounds each invocation's wall time; at least one is needed.
    ``archs`` replaces sampling by the given genotype strings (budget defaults to their count).
    ``channels``/``cells`` None: the GTN's learner size when it was meta-trained on the same
    space, else the space's search-time size. ``program``: ``exact`` compiles each genotype's
    own network, ``shared`` runs every NB201 genotype in one supernet program, ``auto`` picks
    shared on accelerators and exact on CPU.
    """

    gtn: str = "runs/gtn"
    out: str = "runs/search"
    space: str = "nb201"
    proxies: tuple[str, ...] = ("gtn",)
    budget: int = 0
    time_budget: float | None = None  # seconds per invocation
    preset: str = "cpu"
    data_dir: str | None = None
    seed: int = 0
    channels: int | None = None
    cells: int | None = None
    steps: int | None = None  # gtn proxy: first `steps` of the curriculum (default: the GTN's T)
    real_steps: int | None = None  # real proxy: SGD steps on real batches (default: = steps)
    real_lr: float = 0.1
    real_momentum: float = 0.9
    real_batch_size: int | None = None  # default: the GTN's batch size
    real_schedule: str = "constant"  # constant | cosine (decays real_lr to 0 over real_steps)
    eval_subset: int = 10_000  # fixed validation images every proxy is scored on
    program: str = "auto"
    top_k: int = 10  # top/NN.json files written
    archs: tuple[str, ...] = ()  # score these genotype strings (index i = the i-th) instead of samples
    dataset: str | None = None  # default: the GTN's; anything else is an error
    checkpoint: str = "best"  # the GTN's best-validation meta-parameters, or its last ones
    # Fan-out (issue #6). This process scores the indices i with i % num_shards == shard (shard
    # None: $JAX_PROCESS_ID of $JAX_NUM_PROCESSES when set, else 0 of 1); ``workers`` > 1 splits
    # that share again over as many local worker processes, one per GPU where there are GPUs.
    num_shards: int = 1
    shard: int | None = None
    workers: int = 1

    def __post_init__(self):
        check_numbers(self, {"budget": 10**7, "steps": 100_000, "real_steps": 10**7})
        from search_spaces import get_space

        space = get_space(self.space)
        object.__setattr__(self, "space", space.name)
        if isinstance(self.archs, str):
            object.__setattr__(self, "archs", (self.archs,))
        object.__setattr__(self, "archs", tuple(space.from_str(a).to_str() for a in self.archs))
        if self.archs and self.budget > len(self.archs):
            raise ConfigError(f"--budget {self.budget} exceeds the {len(self.archs)} given "
                              "architectures")
        proxies = tuple(str(p).strip().lower() for p in self.proxies)
        if not proxies:
            raise ConfigError(f"give at least one proxy: {', '.join(SEARCH_PROXIES)}")
        for p in proxies:
            _check_choice("proxy", p, SEARCH_PROXIES)
        if len(set(proxies)) != len(proxies):
            raise ConfigError(f"proxy listed twice in {','.join(proxies)}")
        object.__setattr__(self, "proxies", proxies)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("checkpoint", self.checkpoint, GTN_CHECKPOINTS)
        _check_choice("program", self.program, SEARCH_PROGRAMS)
        _check_choice("real schedule", self.real_schedule, REAL_SCHEDULES)
        if self.program == "shared" and self.space != "nb201":
            raise ConfigError("--program shared exists only for the nb201 space (micro genotypes "
                              "differ in parameter shapes); use exact or auto")
        _check_positive(self, "budget", "seed", allow_zero=True)
        _check_positive(self, "real_lr", "eval_subset", "top_k", "num_shards", "workers")
        _check_positive(self, "real_momentum", allow_zero=True)
        if self.shard is not None and not 0 <= self.shard < self.num_shards:
            raise ConfigError(f"--shard must be in [0, {self.num_shards}) for --num-shards "
                              f"{self.num_shards}, got {self.shard}")
        _check_positive(self, "time_budget", "channels", "cells", "steps", "real_steps",
                        "real_batch_size", optional=True)
        if not self.budget and self.time_budget is None and not self.archs:
            raise ConfigError("give --budget N (architectures) or --time-budget SECONDS")
        if self.dataset is not None:
            from gtn_nas.data.base import DATASETS

            _check_choice("dataset", self.dataset, DATASETS)


@dataclass(frozen=True)
class RankConfig:
    """`gtn-nas rank`: each proxy of a search against a ground truth.

    ``truth`` is ``nb201`` (the benchmark's table in ``<data_dir>/nb201/nb201_cifar_accuracy.csv``,
    column ``truth_column``) or ``DIR:proxy`` (another search's scores, e.g. a long real-data
    run, matched by genotype string).
    """

    search: str = "runs/search"
    truth: str = "nb201"
    truth_column: str = "cifar10"  # nb201 truth: cifar10 | cifar100 | imagenet16
    data_dir: str | None = None
    top_fraction: float = 0.5  # also correlate over the top fraction by proxy estimate
    out: str | None = None  # default: SEARCH/rank.json (and SEARCH/plots/)

    def __post_init__(self):
        check_numbers(self)
        if self.truth != "nb201":
            folder, sep, proxy = self.truth.rpartition(":")
            if not sep or not folder:
                raise ConfigError(f"--truth must be nb201 or DIR:proxy (proxy one of "
                                  f"{', '.join(SEARCH_PROXIES)}), got {self.truth!r}")
            _check_choice("truth proxy", proxy, SEARCH_PROXIES)
        _check_choice("truth_column", self.truth_column, ("cifar10", "cifar100", "imagenet16"))
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must be in (0, 1], got {self.top_fraction}")


PRESET_VALUES["search"] = {
    "tiny": dict(budget=4, channels=4, cells=1, eval_subset=256, top_k=3),
    "cpu": dict(budget=50, channels=8, cells=1, eval_subset=2000),  # ~20 s per architecture on 2 cores
    "paper": dict(budget=800, eval_subset=10_000),
}
