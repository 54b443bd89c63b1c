"""One frozen, validated config per command, its named presets, and JSON save/load.

Every user-settable value of a command is a field here, declared once with ``option(...)``: its
default, its help, its choices (an Enum, so ``--help`` lists them), whether it may change when a
run directory is resumed. ``cli.py`` generates each command's options from these fields, and the
run directory's ``config.json`` is the dataclass as JSON.

Presets: ``tiny`` (tests, seconds), ``cpu`` (a useful GTN in minutes on 2 CPU cores) and
``paper`` (the paper's settings, for a GPU). The dataclass defaults *are* the ``cpu`` preset
(``DEFAULT_PRESET``); the others are the fields they change. A command line builds its config as
the preset's values overridden by whatever options the user gave explicitly (``build_config``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from search_spaces import SPACES, get_space

from gtn_nas.core.generator import GENERATORS
from gtn_nas.core.learners import FIXED_LEARNERS
from gtn_nas.core.teacher import CURRICULA
from gtn_nas.core.unroll import REMAT_LEVELS
from gtn_nas.errors import ConfigError, GtnError
from gtn_nas.io.data.base import DATASETS
from gtn_nas.io.files import write_atomic

C = TypeVar("C")


def _choices(name: str, values) -> type[StrEnum]:
    return StrEnum(name, {v: v for v in values})


Preset = _choices("Preset", ("tiny", "cpu", "cpu-conv", "paper"))
Dataset = _choices("Dataset", DATASETS)
LearnerName = _choices("LearnerName", FIXED_LEARNERS + tuple(SPACES))
GeneratorName = _choices("GeneratorName", GENERATORS)
Curriculum = _choices("Curriculum", CURRICULA)
Remat = _choices("Remat", ("auto",) + REMAT_LEVELS)
GtnCheckpoint = _choices("GtnCheckpoint", ("best", "last"))  # which meta-parameters to read
SpaceName = _choices("SpaceName", tuple(SPACES))
TRAINED_PROXIES = ("gtn", "real")  # train a learner; the gtn proxy needs a GTN
ZERO_COST_PROXIES = ("synflow", "naswot", "jacov", "snip", "grad_norm")  # gtn_nas.search.zero_cost
Proxy = _choices("Proxy", TRAINED_PROXIES + ("params", "flops") + ZERO_COST_PROXIES)
Program = _choices("Program", ("auto", "exact", "composed", "shared"))
RealSchedule = _choices("RealSchedule", ("constant", "cosine"))
GtnBN = _choices("GtnBN", ("synthetic", "real"))
TruthColumn = _choices("TruthColumn", ("cifar10", "cifar100", "imagenet16"))
Augment = _choices("Augment", ("auto", "none", "crop", "crop_flip"))
Activation = _choices("Activation", ("leaky_relu", "relu"))

PRESETS = tuple(Preset)
DEFAULT_PRESET = "cpu"
GTN_CHECKPOINTS = tuple(GtnCheckpoint)
SEARCH_PROXIES = tuple(Proxy)
MICRO_POOL = 8  # micro meta-training's default architecture pool (each genotype compiles anew)
INT_LIMIT = 2**31 - 1  # counts become int32 step counters and PRNG folds inside JAX


def option(default: Any, help: str, *, choices: type[StrEnum] | None = None,
           flags: tuple[str, ...] = (), resumable: bool = False, argument: bool = False,
           listing: str | None = None) -> Any:
    """A config field a user sets from the command line.

    ``choices``: the Enum of allowed values (checked here, listed by --help). ``flags``: the
    option's spellings when not ``--field-name`` (e.g. ``("--inner-steps", "-T")``, or
    ``("--learn-labels/--fixed-labels",)`` for a bool). ``resumable``: may differ between the
    invocation that created a run directory and one that resumes it. ``argument``: positional.
    ``listing``: a tuple field given as ``csv`` (one comma-separated value) or ``repeat``
    (the option repeated).
    """
    meta = {"help": help, "choices": choices, "flags": flags, "resumable": resumable,
            "argument": argument, "listing": listing}
    return field(default=default, metadata=meta)


def resumable_keys(cls) -> frozenset[str]:
    """The fields of ``cls`` that may change when a run directory is resumed."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))


def check_numbers(cfg, limits: dict[str, int] | None = None) -> None:
    """Every float option finite, every count within int32 and its own sane ``limits``.

    Run first in each config's ``__post_init__``: NaN passes every ``<``/``>`` test below it, and
    a NaN meta-lr or retrain lr would silently train to NaN."""
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


def check_choices(cfg) -> None:
    """Each field with ``choices`` holds one of them (None passes: the code's default); stored
    as the plain string, so config.json and comparisons see no Enum."""
    for f in dataclasses.fields(cfg):
        enum, v = f.metadata.get("choices"), getattr(cfg, f.name)
        if enum is None or v is None:
            continue
        values = v if isinstance(v, tuple) else (v,)
        for x in values:
            if str(x) not in enum.__members__:
                raise ConfigError(f"{f.name.replace('_', ' ')} must be one of "
                                  f"{', '.join(enum.__members__)}, got {x!r}")
        plain = tuple(str(x) for x in values) if isinstance(v, tuple) else str(v)
        object.__setattr__(cfg, f.name, plain)


def check_positive(cfg, *names: str, allow_zero: bool = False, optional: bool = False) -> None:
    """``optional``: None (the default that the code fills in) passes."""
    for n in names:
        v = getattr(cfg, n)
        if v is None and optional:
            continue
        if v is None or v < 0 or (v == 0 and not allow_zero):
            raise ConfigError(f"{n} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


def check_fraction(cfg, *names: str) -> None:
    for n in names:
        if not 0 <= getattr(cfg, n) < 1:
            raise ConfigError(f"{n} must be in [0, 1), got {getattr(cfg, n)}")


DATA_DIR_HELP = ("Folder with the raw dataset files (or a tfds data dir). Default: "
                 "$GTN_NAS_DATA_DIR, else ../shared/data beside this repository.")
GTN_CHECKPOINT_HELP = ("The GTN's meta-parameters to use: best (highest validation during "
                       "meta-training) or last.")


# ---------------------------------------------------------------------------------------------
# meta-train


# Width x batch x inner steps of the largest fixed conv learner that `remat auto` keeps every
# residual of: base_fc at width 16, B=128, T=32 stores ~1.5 GB and then runs 0.8x the time of
# remat per step, in 2.1 GB in all (benchmarks/RESULTS.md, Speed, 2026-12-05).
AUTO_REMAT_NONE_MAX = 16 * 128 * 32


def auto_remat(learner: str, width: int | None, batch: int, steps: int) -> str:
    """What `--remat auto` picks. Storing every inner step's residuals is the fastest wherever
    they fit: the MLPs (~1.1 GB) and the fixed conv learners up to the measured size above.
    Wider ones (the paper's widths) and the search spaces' supernets (the NB201 one at C=8 did
    not fit 24 GB) recompute each step in the backward pass instead."""
    if learner in ("mlp", "linear"):
        return "none"
    small = width is not None and width * batch * steps <= AUTO_REMAT_NONE_MAX
    if learner in FIXED_LEARNERS and small:
        return "none"
    return "step"


@dataclass(frozen=True)
class MetaTrainConfig:
    """Everything `gtn-nas meta-train` needs; saved as run_dir/config.json."""

    COMMAND: ClassVar[str] = "meta-train"

    out: str = option("runs/gtn", "Run directory (created, or resumed if it exists).", resumable=True)
    dataset: str = option("mnist", "Data set.", choices=Dataset)
    data_dir: str | None = option(None, DATA_DIR_HELP, resumable=True)
    preset: str = option(DEFAULT_PRESET, "Named settings: tiny (tests, seconds), cpu (minutes on "
                         "2 cores), cpu-conv (the paper's conv learner, 10-13 min on 2 AVX-512 "
                         "cores, 17-18 with AVX2; with --dataset cifar10 base_larger2 at width 8, "
                         "~20 min), paper (the paper's, GPU); options given override them.",
                         choices=Preset)
    learner: str = option("mlp", "Meta-training learner: a fixed network or a search space "
                          "(a new architecture every outer step).", choices=LearnerName)
    learner_width: int | None = option(256, "Hidden width (fixed learners) or channels (NAS learners).")
    learner_cells: int = option(1, "NAS learners: cells per stage.")
    arch_pool: int = option(0, "NAS learners: draw each step's architecture from a fixed pool of "
                            f"this many (0: a fresh one every step; micro: {MICRO_POOL}).")
    generator: str = option("mlp", "Generator network (conv is the paper's).", choices=GeneratorName)
    generator_hidden: int | None = option(64, "Width of the generator's first dense layer.")
    inner_steps: int = option(32, "Inner steps T.", flags=("--inner-steps", "-T"))
    batch_size: int = option(128, "Synthetic images per inner step.", flags=("--batch-size", "-B"))
    noise_dim: int = option(64, "Generator noise size.")
    curriculum: str = option("full", "What the teacher learns of its input noise.", choices=Curriculum)
    learn_labels: bool = option(False, "Meta-learn soft labels.",
                                flags=("--learn-labels/--fixed-labels",))
    init_lr: float = option(0.1, "Initial learned inner learning rate of every step.")
    init_momentum: float = option(0.5, "Initial learned inner momentum of every step.")
    lr_max: float = option(0.6, "Bound of the learned inner lr, lr_max*sigmoid (0: unbounded "
                           "exp, the paper's).")
    momentum_max: float = option(0.9, "Bound of the learned momentum, <= 1 (0: unbounded exp, "
                                 "the paper's).")
    spike_factor: float = option(10.0, "Skip a meta-step whose gradient norm exceeds this x the "
                                 "running mean (0: off).", resumable=True)
    rollback_drop: float = option(0.03, "Validation fall below the best (fraction, e.g. 0.03) "
                                  "that restores the best state with half the meta-lr (0: off).",
                                  resumable=True)
    # The step size and the guards may change on resume: the advice after a blow-up is to resume
    # the same run with a lower --meta-lr (the optimiser state is unchanged).
    meta_lr: float = option(0.02, "Adam learning rate of the outer loop.", resumable=True)
    meta_b1: float = option(0.9, "Outer Adam beta1.")
    meta_b2: float = option(0.9, "Outer Adam beta2.")
    meta_eps: float = option(1e-5, "Outer Adam epsilon.")
    final_relative_lr: float = option(0.1, "Meta-lr at the end of the cosine decay, as a fraction "
                                      "of --meta-lr.")
    grad_clip: float = option(10.0, "Global-norm clip of the meta-gradient (0: off).", resumable=True)
    iterations: int = option(1100, "Outer (meta) steps.", resumable=True)
    time_budget: float | None = option(None, "Stop after the outer step that passes this many "
                                       "seconds of this invocation (validated and checkpointed; "
                                       "the same command resumes).", resumable=True)
    num_learners: int = option(1, "Fresh learners per outer step (vmapped, averaged).")
    meta_batch_size: int = option(1024, "Real images per meta-loss batch.")
    intermediate_every: int = option(0, "Real-data loss every U inner steps (0: final only).")
    intermediate_weight: float = option(1.0, "Weight of the intermediate real-data losses.")
    remat: str = option("auto", "Recomputation in the unroll's backward pass (auto: none for the "
                        "MLP learners and small fixed conv learners, step for larger ones and "
                        "search spaces); the same numbers, other time and memory.", choices=Remat,
                        resumable=True)
    augment: bool = option(False, "Crop+flip the meta-loss batches (the paper's CIFAR-10 setting).",
                           flags=("--augment/--no-augment",))
    seed: int = option(0, "Root PRNG seed.")
    split_seed: int = option(0, "Seed of the train/validation split.")
    log_every: int = option(10, "Outer steps between log rows.", resumable=True)
    eval_every: int = option(50, "Outer steps between validation learners (0: only at the end).",
                             resumable=True)
    eval_subset: int = option(10_000, "Validation images the periodic validation learner is "
                              "scored on.", resumable=True)
    checkpoint_every: int = option(50, "Outer steps between checkpoints.", resumable=True)
    samples_every: int = option(0, "Outer steps between curriculum PNGs (0: only at the end).",
                                resumable=True)
    max_nonfinite: int = option(5, "Consecutive non-finite meta-steps that stop the run.",
                                resumable=True)
    devices: int = option(1, "Devices the learners are sharded over (0: all, every process's).",
                          resumable=True)
    coordinator: str | None = option(None, "Multi-process: HOST:PORT of process 0 (default "
                                     "$JAX_COORDINATOR_ADDRESS).", resumable=True)
    num_processes: int | None = option(None, "Multi-process: number of processes (default "
                                       "$JAX_NUM_PROCESSES).", resumable=True)
    process_id: int | None = option(None, "Multi-process: this process's id, 0..n-1 (default "
                                    "$JAX_PROCESS_ID).", resumable=True)

    def __post_init__(self):
        check_numbers(self, {"iterations": 10**7, "inner_steps": 100_000, "batch_size": 10**6,
                             "num_learners": 100_000, "meta_batch_size": 10**6})
        if self.learner not in FIXED_LEARNERS:  # a search space, by any of its names
            try:
                object.__setattr__(self, "learner", get_space(self.learner).name)
            except GtnError:
                pass  # check_choices names the valid ones
        check_choices(self)
        check_positive(self, "inner_steps", "batch_size", "noise_dim", "iterations", "num_learners",
                       "meta_batch_size", "meta_lr", "init_lr", "log_every", "checkpoint_every",
                       "max_nonfinite", "eval_subset", "learner_cells")
        check_positive(self, "intermediate_every", "grad_clip", "eval_every", "samples_every",
                       "init_momentum", "arch_pool", "devices", "lr_max", "momentum_max",
                       "spike_factor", "rollback_drop", allow_zero=True)
        if self.spike_factor and self.spike_factor <= 1:
            raise ConfigError(f"spike_factor must be > 1 (or 0: off), got {self.spike_factor}")
        if not 0 <= self.rollback_drop < 1:
            raise ConfigError(f"rollback_drop is a fraction of accuracy in [0, 1), got {self.rollback_drop}")
        if self.momentum_max > 1:
            raise ConfigError(f"momentum_max must be at most 1, got {self.momentum_max}")
        check_positive(self, "learner_width", "generator_hidden", "time_budget", optional=True)
        if not 0 < self.final_relative_lr <= 1:
            raise ConfigError(f"final_relative_lr must be in (0, 1], got {self.final_relative_lr}")
        if self.learner == "micro" and not self.arch_pool:
            # Each micro genotype has its own parameter shapes, so its own second-order program
            # (about a minute to compile on 2 cores): a fresh one every step would compile every
            # step. Meta-training draws from a fixed pool instead (--arch-pool to change it).
            object.__setattr__(self, "arch_pool", MICRO_POOL)
        if self.remat == "auto":
            object.__setattr__(self, "remat", auto_remat(self.learner, self.learner_width,
                                                         self.batch_size, self.inner_steps))
        if self.remat == "nested" and self.inner_steps < 4:
            raise ConfigError("remat 'nested' needs at least 4 inner steps")


# ---------------------------------------------------------------------------------------------
# evaluate


@dataclass(frozen=True)
class EvaluateConfig:
    """`gtn-nas evaluate`: fresh learners on GTN data vs the same learners on real data."""

    COMMAND: ClassVar[str] = "evaluate"

    gtn: str = option("runs/gtn", "Run directory of `gtn-nas meta-train`.")
    data_dir: str | None = option(None, DATA_DIR_HELP)
    num_seeds: int = option(5, "Fresh learners (new seeds) per side.")
    seed: int = option(1000, "Seed of the fresh learners (none of the meta-training ones).")
    steps: int | None = option(None, "Inner steps (default: the GTN's T).")
    real_lrs: tuple[float, ...] = option((0.01, 0.03, 0.1, 0.3, 1.0), "Grid of real-data "
                                         "learning rates.", listing="csv")
    real_momentums: tuple[float, ...] = option((0.0, 0.5, 0.9), "Grid of real-data momentums.",
                                               listing="csv")
    learner: str | None = option(None, "Evaluate another fixed learner than the meta-training "
                                 "one.", choices=_choices("FixedLearner", FIXED_LEARNERS))
    out: str | None = option(None, "Result JSON (default GTN_RUN/evaluate.json).")
    curve: bool = option(True, "Also test accuracy after 1, 2, 4, ... steps (compiles each "
                         "length).", flags=("--curve/--no-curve",))
    checkpoint: str = option("best", GTN_CHECKPOINT_HELP, choices=GtnCheckpoint)

    def __post_init__(self):
        check_numbers(self, {"num_seeds": 10_000, "steps": 100_000})
        check_choices(self)
        check_positive(self, "num_seeds")
        check_positive(self, "steps", optional=True)
        if not self.real_lrs or not self.real_momentums:
            raise ConfigError("the real-data grid needs at least one learning rate and momentum")


# ---------------------------------------------------------------------------------------------
# search and rank


@dataclass(frozen=True)
class SearchConfig:
    """`gtn-nas search`: random search scored by proxies; saved as DIR/config.json.

    Architecture i of the search is ``space.sample`` of a key derived from
    ``fold_in(PRNGKey(seed), i)``. ``budget`` counts architectures (indices 0..budget-1; 0: no
    count limit), ``time_budget`` bounds each invocation's wall time; at least one is needed.
    ``archs`` replaces sampling by the given genotype strings (budget defaults to their count);
    ``arch_file`` reads them from a file, one per line (blank lines and ``#`` comments skipped).
    A GTN is read only when a proxy needs it (``needs_gtn``): a search of baselines and zero-cost
    proxies needs ``dataset`` instead, and is scored at the benchmark's C=16, N=5 unless sizes
    are given.
    ``channels``/``cells`` None: the GTN's learner size when it was meta-trained on the same
    space, else the space's search-time size. ``program``: ``exact`` compiles each genotype's
    own network, ``composed`` runs it as per-op programs every NB201 genotype shares, ``shared``
    runs every NB201 genotype in one supernet program; ``auto`` picks shared on accelerators and
    composed on CPU for nb201, exact for micro. Options marked resumable change how much is done
    or written, not any score.
    """

    COMMAND: ClassVar[str] = "search"

    gtn: str = option("runs/gtn", "Run directory of `gtn-nas meta-train`.")
    out: str = option("runs/search", "Search directory (created, or resumed if it exists).",
                      resumable=True)
    space: str = option("nb201", "Search space.", choices=SpaceName)
    proxies: tuple[str, ...] = option(("gtn",), "Comma-separated proxies; the first ranks the "
                                      "leaderboard.", choices=Proxy, flags=("--proxy",),
                                      listing="csv", resumable=True)
    budget: int = option(50, "Architectures to score (indices 0..N-1; 0: no count limit).",
                         resumable=True)
    time_budget: float | None = option(None, "Stop starting new architectures after this many "
                                       "seconds (the whole invocation).", resumable=True)
    preset: str = option(DEFAULT_PRESET, "Named settings: tiny, cpu (cpu-conv: the same), paper; "
                         "options given override them.", choices=Preset, resumable=True)
    data_dir: str | None = option(None, DATA_DIR_HELP, resumable=True)
    seed: int = option(0, "Search seed: architecture i is fold_in(PRNGKey(seed), i).")
    channels: int | None = option(8, "Channels C of the scored networks (None: the GTN's NAS "
                                  "learner's or the space's).")
    cells: int | None = option(1, "Cells N per stage of the scored networks.")
    steps: int | None = option(None, "gtn proxy: inner steps on the curriculum (default: the "
                               "GTN's T).")
    real_steps: int | None = option(None, "real proxy: real-data SGD steps (default: --steps).")
    real_lr: float = option(0.1, "real proxy: learning rate.")
    real_momentum: float = option(0.9, "real proxy: momentum.")
    real_batch_size: int | None = option(None, "real proxy: batch size (default: the GTN's).")
    real_schedule: str = option("constant", "real proxy: constant lr, or cosine decay to 0.",
                                choices=RealSchedule)
    gtn_bn: str = option("synthetic", "gtn proxy: batch-norm statistics of the eval: synthetic "
                         "(the last synthetic batch's, as meta-training evaluates) or real "
                         "(recomputed on one fixed real training batch of the GTN's batch size).",
                         choices=GtnBN)
    eval_subset: int = option(2000, "Validation images every proxy is scored on.")
    program: str = option("auto", "exact (compile per architecture), composed (nb201: per-op "
                          "programs shared by all), shared (nb201: one supernet program), auto "
                          "(nb201: shared on accelerators, composed on CPU; micro: exact).",
                          choices=Program)
    top_k: int = option(10, "Write top/NN.json for the best K.", resumable=True)
    archs: tuple[str, ...] = option((), "Score this genotype string instead of sampling "
                                    "(repeatable; index i = the i-th).", flags=("--arch",),
                                    listing="repeat")
    arch_file: str | None = option(None, "Score the genotype strings of this file, one per line, "
                                   "instead of sampling.")
    zc_batch_size: int = option(64, "Zero-cost proxies: images of the search's one fixed "
                                "training batch.")
    dataset: str | None = option(None, "Must match the GTN's data set (default: the GTN's).",
                                 choices=Dataset)
    checkpoint: str = option("best", GTN_CHECKPOINT_HELP, choices=GtnCheckpoint)
    # Fan-out. This process scores the indices i with i % num_shards == shard (shard None:
    # $JAX_PROCESS_ID of $JAX_NUM_PROCESSES when set, else 0 of 1); ``workers`` > 1 splits that
    # share again over as many local worker processes, one per GPU where there are GPUs.
    num_shards: int = option(1, "Processes/hosts sharing this search (default $JAX_NUM_PROCESSES "
                             "or 1).", resumable=True)
    shard: int | None = option(None, "This process's shard, 0..num_shards-1: it scores indices "
                               "i % num_shards == shard (default $JAX_PROCESS_ID).", resumable=True)
    workers: int = option(1, "Local worker processes (one per GPU where there are GPUs).",
                          resumable=True)

    def __post_init__(self):
        check_numbers(self, {"budget": 10**7, "steps": 100_000, "real_steps": 10**7})
        space = get_space(self.space)
        object.__setattr__(self, "space", space.name)
        if isinstance(self.archs, str):
            object.__setattr__(self, "archs", (self.archs,))
        if self.arch_file is not None:
            from_file = read_arch_file(self.arch_file, space)
            if self.archs and tuple(self.archs) != from_file:
                raise ConfigError("give the architectures with --arch or --arch-file, not both")
            object.__setattr__(self, "archs", from_file)
        object.__setattr__(self, "archs", tuple(space.from_str(a).to_str() for a in self.archs))
        if self.archs and self.budget > len(self.archs):
            raise ConfigError(f"--budget {self.budget} exceeds the {len(self.archs)} given "
                              "architectures")
        proxies = tuple(str(p).strip().lower() for p in self.proxies)
        if not proxies:
            raise ConfigError(f"give at least one proxy: {', '.join(SEARCH_PROXIES)}")
        if len(set(proxies)) != len(proxies):
            raise ConfigError(f"proxy listed twice in {','.join(proxies)}")
        object.__setattr__(self, "proxies", proxies)
        check_choices(self)
        zero_cost = [p for p in proxies if p in ZERO_COST_PROXIES]
        if zero_cost and self.space != "nb201":
            raise ConfigError(f"zero-cost proxies ({', '.join(zero_cost)}) are defined on the "
                              f"NAS-Bench-201 network; use --space nb201")
        check_positive(self, "zc_batch_size")
        if zero_cost and self.zc_batch_size < 2:
            raise ConfigError(f"--zc-batch-size must be at least 2, got {self.zc_batch_size}")
        if self.program in ("shared", "composed") and self.space != "nb201":
            raise ConfigError(f"--program {self.program} exists only for the nb201 space (micro "
                              "genotypes differ in parameter shapes); use exact or auto")
        check_positive(self, "budget", "seed", allow_zero=True)
        check_positive(self, "real_lr", "eval_subset", "top_k", "num_shards", "workers")
        check_positive(self, "real_momentum", allow_zero=True)
        if self.shard is not None and not 0 <= self.shard < self.num_shards:
            raise ConfigError(f"--shard must be in [0, {self.num_shards}) for --num-shards "
                              f"{self.num_shards}, got {self.shard}")
        check_positive(self, "time_budget", "channels", "cells", "steps", "real_steps",
                       "real_batch_size", optional=True)
        if not self.budget and self.time_budget is None and not self.archs:
            raise ConfigError("give --budget N (architectures) or --time-budget SECONDS")

    @property
    def needs_gtn(self) -> bool:
        """The gtn proxy reads a GTN; so does the real proxy without ``dataset``: it then takes
        the GTN's data set, split, batch size and curriculum length."""
        return "gtn" in self.proxies or ("real" in self.proxies and self.dataset is None)

    @staticmethod
    def adjust(given: dict[str, Any]) -> dict[str, Any]:
        """A ``--time-budget`` or architecture list without ``--budget`` drops the preset's
        count; a search without trained proxies defaults to the benchmark's size (C=16, N=5)."""
        if given.get("budget") is None and (given.get("time_budget") is not None
                                            or given.get("archs") or given.get("arch_file")):
            given = {**given, "budget": 0}
        proxies = given.get("proxies")
        if isinstance(proxies, str):
            proxies = proxies.split(",")
        if proxies and not any(str(p).strip().lower() in TRAINED_PROXIES for p in proxies):
            given = {"channels": 16, "cells": 5, **given}
        return given


def read_arch_file(path: str, space) -> tuple[str, ...]:
    """The genotype strings of ``path``: one per line, blank lines and ``#`` comments skipped."""
    from gtn_nas.errors import ArchitectureError

    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--arch-file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --arch-file {path} ({e})") from None
    archs = []
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            archs.append(space.from_str(text).to_str())
        except ArchitectureError as e:
            raise ArchitectureError(f"{path} line {n}: {e}") from None
    if not archs:
        raise ConfigError(f"--arch-file {path} lists no architectures")
    return tuple(archs)


@dataclass(frozen=True)
class RankConfig:
    """`gtn-nas rank`: each proxy of a search against a ground truth.

    ``truth`` is ``nb201`` (the benchmark's table in ``<data_dir>/nb201/nb201_cifar_accuracy.csv``,
    column ``truth_column``) or ``DIR:proxy`` (another search's scores, e.g. a long real-data
    run, matched by genotype string).
    """

    COMMAND: ClassVar[str] = "rank"

    search: str = option("runs/search", "The --out directory of `gtn-nas search`.", argument=True)
    truth: str = option("nb201", "nb201 (the benchmark's table) or DIR:proxy (another search's "
                        "scores).")
    truth_column: str = option("cifar10", "nb201 truth: which data set's accuracy.",
                               choices=TruthColumn)
    data_dir: str | None = option(None, DATA_DIR_HELP)
    top_fraction: float = option(0.5, "Also correlate over this top fraction by proxy estimate.")
    out: str | None = option(None, "Result JSON (default SEARCH/rank.json; plots beside it).")

    def __post_init__(self):
        check_numbers(self)
        if self.truth != "nb201":
            folder, sep, proxy = self.truth.rpartition(":")
            if not sep or not folder:
                raise ConfigError(f"--truth must be nb201 or DIR:proxy (proxy one of "
                                  f"{', '.join(SEARCH_PROXIES)}), got {self.truth!r}")
            if proxy not in SEARCH_PROXIES:
                raise ConfigError(f"truth proxy must be one of {', '.join(SEARCH_PROXIES)}, got "
                                  f"{proxy!r}")
        check_choices(self)
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must be in (0, 1], got {self.top_fraction}")


# ---------------------------------------------------------------------------------------------
# retrain


@dataclass(frozen=True)
class RetrainConfig:
    """Everything `gtn-nas retrain` needs; saved (with the arch resolved) as run_dir/config.json.

    ``arch`` is a genotype string, a ``top/NN.json`` file, or with ``top`` a search directory;
    the library resolves it to genotype strings (``search.archs.resolve_archs``).
    ``channels``/``cells`` None: the sizes the search scored a search result at, else the
    preset's ``fallback_channels``/``fallback_cells``; the run's config.json holds the
    resolved values.
    """

    COMMAND: ClassVar[str] = "retrain"

    out: str = option("runs/retrain", "Run directory (created, or resumed if it exists; with "
                      "--top one NN/ per architecture).", resumable=True)
    arch: str = option("", "Genotype string (NB201 '|op~0|+...' or micro 'normal: ... | reduce: "
                       "...'), a top/NN.json of `gtn-nas search`, or a search directory with "
                       "--top K.")
    space: str | None = option(None, "Search space (default: inferred from the architecture).",
                               choices=SpaceName)
    top: int | None = option(None, "Retrain the best K architectures of the search directory "
                             "given as --arch, one after another.", resumable=True)
    dataset: str | None = option(None, "Data set (default: the search's, for a top/NN.json or "
                                 "search directory; else mnist).", choices=Dataset)
    data_dir: str | None = option(None, DATA_DIR_HELP, resumable=True)
    preset: str = option(DEFAULT_PRESET, "Named settings: tiny (tests, seconds), cpu (>=99% MNIST "
                         "on 2 cores; cpu-conv: the same), paper (NAO's 600-epoch recipe, GPU).",
                         choices=Preset)
    channels: int | None = option(None, "C, channels of the first stage (default: the search's, "
                                  "for a search result, else --fallback-channels).")
    cells: int | None = option(None, "N, cells per stage (default: the search's, else "
                               "--fallback-cells).")
    fallback_channels: int = option(8, "C when neither --channels nor the search result gives "
                                    "one.", resumable=True)
    fallback_cells: int = option(1, "N when neither --cells nor the search result gives one.",
                                 resumable=True)
    epochs: int = option(3, "Training epochs (cosine schedule length).")
    batch_size: int = option(128, "Images per SGD step.", flags=("--batch-size", "-B"))
    lr: float = option(0.1, "Initial learning rate (cosine decay to --lr-min).")
    lr_min: float = option(0.0, "Final learning rate.")
    warmup_epochs: float = option(0.0, "Linear warm-up epochs before the cosine.")
    momentum: float = option(0.9, "SGD momentum.")
    nesterov: bool = option(False, "Nesterov momentum.", flags=("--nesterov/--no-nesterov",))
    weight_decay: float = option(3e-4, "L2 weight decay.")
    grad_clip: float = option(5.0, "Global-norm gradient clip (0: off).")
    label_smoothing: float = option(0.0, "Label smoothing epsilon.")
    augment: str = option("auto", "auto (crop+flip for CIFAR-10, none for the MNISTs), none, "
                          "crop or crop_flip.", choices=Augment)
    cutout: int = option(0, "Cutout square side in pixels (0: off).")
    drop_path: float = option(0.0, "Drop-path probability of the deepest cell at the end "
                              "(ramped with depth and progress).")
    auxiliary: bool = option(False, "Auxiliary head after the second reduction.",
                             flags=("--auxiliary/--no-auxiliary",))
    aux_weight: float = option(0.4, "Loss weight of the auxiliary head.")
    dropout: float = option(0.0, "Dropout before the classifier.")
    bn_momentum: float = option(0.9, "Weight of the old batch-norm statistic.")
    activation: str = option("leaky_relu", "leaky_relu (as the GTN learners searched with) or "
                             "relu (NB201's own).", choices=Activation)
    train_subset: int = option(0, "Train on a fixed seeded subset of this many images (0: all).")
    eval_subset: int = option(0, "Per-epoch validation on a fixed subset of this many images "
                              "(0: all; test is always all).")
    eval_batch_size: int = option(1000, "Images per evaluation batch.", resumable=True)
    seed: int = option(0, "Seed of init, data order and augmentation.")
    split_seed: int = option(0, "Seed of the train/validation split.")
    log_every: int = option(20, "Steps between metrics rows / progress updates.", resumable=True)
    checkpoint_every: int = option(1, "Epochs between checkpoints.", resumable=True)

    def __post_init__(self):
        check_numbers(self, {"epochs": 100_000})
        check_choices(self)
        if self.augment == "auto" and self.dataset is not None:
            object.__setattr__(self, "augment", "crop_flip" if self.dataset == "cifar10" else "none")
        if self.space is not None:
            object.__setattr__(self, "space", get_space(self.space).name)
        check_positive(self, "epochs", "batch_size", "lr", "eval_batch_size", "log_every",
                       "checkpoint_every", "fallback_channels", "fallback_cells")
        check_positive(self, "lr_min", "warmup_epochs", "momentum", "weight_decay", "grad_clip",
                       "label_smoothing", "cutout", "drop_path", "aux_weight", "dropout",
                       "bn_momentum", "train_subset", "eval_subset", allow_zero=True)
        check_positive(self, "channels", "cells", "top", optional=True)
        check_fraction(self, "drop_path", "dropout", "label_smoothing", "bn_momentum")
        if self.momentum >= 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0")
        if self.lr_min > self.lr:
            raise ConfigError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs "
                              f"({self.epochs})")


# ---------------------------------------------------------------------------------------------
# Presets: what each changes from the dataclass defaults (= DEFAULT_PRESET)

PRESET_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "meta-train": {
        "tiny": dict(learner_width=32, inner_steps=4, batch_size=16, noise_dim=8, iterations=6,
                     meta_batch_size=16, init_lr=0.02, meta_b2=0.999, meta_eps=1e-8,
                     grad_clip=0.0, intermediate_every=1, rollback_drop=0.0, remat="step",
                     log_every=2, eval_every=3, eval_subset=500, checkpoint_every=3),
        # Tuned on 2 cores (benchmarks/RESULTS.md): the final-loss-only meta-objective is ~40%
        # cheaper per step and learned faster than U=1; a large meta batch costs little there.
        # remat auto (the dataclass default): none for this MLP, step for a conv learner.
        # A narrow generator (64 hidden) learned faster than wider ones (1024 < 512 < 256 < 128 <
        # 64 ~ 32 in validation accuracy at 300 steps) and is cheaper; Adam with b2 0.9 (the
        # paper's CIFAR setting) tracks the fast-changing meta-gradient scale better.
        # Robustness (benchmarks/RESULTS.md, Robustness): with the paper's unbounded exp schedule
        # some seeds and CPU kinds drove a step's momentum above 1 and the lr to the edge of
        # stability, and the meta-gradient exploded; bounded schedule, spike rejection and
        # rollback on a validation collapse keep every measured run from it.
        "cpu": {},
        # The paper's conv learner at a width and a length that 2 AVX-512 cores meta-train in
        # 10-13 min (17-18 with AVX2 only: a slower step; channel-major slices + remat per step);
        # 700 steps taught 94.4 / 95.1 / 95.3% over 3 seeds x 2 ISAs, against 93.9 / 94.6 /
        # 94.9% for 600 (benchmarks/RESULTS.md, Teaching). Batches of 64: the step's cost is mostly
        # elementwise work that scales with the batch, so twice the meta-steps fit, and at equal
        # wall (~9 min) 400 meta-steps of B=64 reached 93.6% validation against 91.5% for 200 of
        # B=128 (benchmarks/RESULTS.md, Teaching). Everything else is the cpu preset's.
        # remat step: the setting its teaching table was measured with; with `none` (~10% less
        # time here) three meta-seeds taught 0.4-0.9 points less (Teaching, 2026-12-05).
        "cpu-conv": dict(learner="base_fc", learner_width=16, batch_size=64, iterations=700,
                         remat="step"),
        # The paper's MNIST setting (gtn-spec 1.8), guards off as in the paper.
        "paper": dict(learner="base_fc", learner_width=None, generator="conv",
                      generator_hidden=None, noise_dim=128, init_lr=0.02, lr_max=0.0,
                      momentum_max=0.0, spike_factor=0.0, rollback_drop=0.0, meta_b2=0.999,
                      meta_eps=1e-8, grad_clip=0.0, iterations=2000, meta_batch_size=128,
                      intermediate_every=1, remat="step", log_every=50, checkpoint_every=100),
    },
    "search": {
        "tiny": dict(budget=4, channels=4, cells=1, eval_subset=256, top_k=3),
        "cpu": {},  # ~4 s per architecture for the gtn proxy on 2 cores (program composed)
        "cpu-conv": {},
        "paper": dict(budget=800, channels=None, cells=None, eval_subset=10_000),
    },
    "retrain": {
        # tests and smoke runs: compilation dominates (about 40 CPU-seconds on 2 busy cores)
        "tiny": dict(fallback_channels=4, epochs=2, batch_size=16, lr=0.05, weight_decay=0.0,
                     train_subset=128, eval_subset=256, eval_batch_size=256, log_every=4),
        "cpu": {},  # >= 99% MNIST test accuracy on 2 CPU cores (benchmarks/RESULTS.md)
        "cpu-conv": {},
        # NAO's final training (gtn-spec 3.1): 600 epochs, C=36, N=6, cutout 16, drop-path keep
        # 0.8, auxiliary head 0.4, dropout keep 0.6, clip 5
        "paper": dict(channels=36, cells=6, epochs=600, lr=0.025, cutout=16, drop_path=0.2,
                      auxiliary=True, dropout=0.4, log_every=50),
    },
}
# CIFAR-10 meta-training, per preset. `paper`: the paper's architecture-search settings
# (gtn-spec 1.8). `cpu-conv`: the paper's CIFAR-10 learner shape (`base_larger2`: strided convs,
# global pooling, like NB201's networks) at a width 2 cores meta-train in ~20 min (2.2 s per
# meta-step at B=64); the GTN of the NB201/CIFAR-10 proxy table (benchmarks/RESULTS.md).
CIFAR_OVERRIDES = {
    "paper": dict(meta_lr=0.004, meta_b2=0.9, meta_eps=1e-5, meta_batch_size=256,
                  intermediate_every=16, inner_steps=128, augment=True, learner="base_larger2"),
    "cpu-conv": dict(learner="base_larger2", learner_width=8, iterations=400),
}


def preset_values(cls, preset: str) -> dict[str, Any]:
    """The fields ``preset`` sets for ``cls``'s command ({} for a command without presets)."""
    table = PRESET_VALUES.get(cls.COMMAND)
    if table is None:
        return {}
    if preset not in table:
        raise ConfigError(f"preset must be one of {', '.join(table)}, got {preset!r}")
    return dict(table[preset])


def build_config(cls: type[C], preset: str | None, given: dict[str, Any]) -> C:
    """Preset values, then dataset defaults, then the user's explicit options (None = unset)."""
    given = {k: v for k, v in given.items() if v is not None}
    if hasattr(cls, "adjust"):
        given = cls.adjust(given)
    preset = preset or DEFAULT_PRESET
    values = preset_values(cls, preset)
    if cls is MetaTrainConfig and given.get("dataset") == "cifar10":
        values.update(CIFAR_OVERRIDES.get(preset, {}))
    values.update(given)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "preset" in names:
        values["preset"] = preset
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown config keys for {cls.COMMAND}: {', '.join(sorted(unknown))}")
    try:
        return cls(**values)
    except TypeError as e:  # wrong types from a hand-edited JSON
        raise ConfigError(f"bad {cls.COMMAND} config: {e}") from None


def save_config(cfg, path: Path) -> None:
    write_atomic(Path(path), json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n")


def load_config(cls: type[C], path: Path) -> C:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path} is not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} is not a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"config {path} does not fit {cls.__name__}: {e}") from None


CONFIGS = (MetaTrainConfig, EvaluateConfig, SearchConfig, RankConfig, RetrainConfig)
