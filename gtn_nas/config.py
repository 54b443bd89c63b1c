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
import functools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from search_spaces import SPACES, get_space

from gtn_nas.core.generator import GENERATORS
from gtn_nas.core.learners import FIXED_LEARNERS
from gtn_nas.core.teacher import CURRICULA, check_schedule
from gtn_nas.core.unroll import REMAT_LEVELS
from gtn_nas.errors import ConfigError, GtnError
from gtn_nas.io.data.base import DATASETS
from gtn_nas.io.files import write_atomic
from gtn_nas.search.zero_cost import ZERO_COST

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
ZERO_COST_PROXIES = tuple(ZERO_COST)  # the registry: gtn_nas.search.zero_cost
VOTE = "vote"  # a rank aggregate of other proxies of the search (gtn_nas.search.vote)
Proxy = _choices("Proxy", TRAINED_PROXIES + ("params", "flops") + ZERO_COST_PROXIES + (VOTE,))
Program = _choices("Program", ("auto", "exact", "composed", "shared"))
RealSchedule = _choices("RealSchedule", ("constant", "cosine"))
GtnBN = _choices("GtnBN", ("synthetic", "real"))
StrategyName = _choices("StrategyName", ("random", "evolution", "local", "cascade"))
# The cascade a user gets by asking for one, chosen by benchmarks/search_quality.py (RESULTS,
# Search quality): a stage is [STRATEGY:]PROXY[@STEPS][/CxN] (gtn_nas.search.stages). No GTN
# stage: it is not yet measured to help, so it is opt-in (--stages evolution:vote,gtn,zico).
DEFAULT_STAGES = ("evolution:vote", "zico")
DEFAULT_EXPLORE_SHARE = 0.7  # the default stages' first-stage share of a time budget
DEFAULT_VOTE = ("flops", "naswot", "jacov", "meco")  # issue #41's vote, the cascade's default
STAGE = re.compile(r"^(?:(?P<strategy>[a-z_]+):)?(?P<proxy>[a-z_]+)(?:@(?P<steps>\d+))?"
                   r"(?:/(?P<channels>\d+)x(?P<cells>\d+))?$")  # one --stages entry
TruthColumn = _choices("TruthColumn", ("cifar10", "cifar100", "imagenet16"))
Augment = _choices("Augment", ("auto", "none", "crop", "crop_flip"))
Activation = _choices("Activation", ("leaky_relu", "relu"))

PRESETS = tuple(Preset)
DEFAULT_PRESET = "cpu"
GTN_CHECKPOINTS = tuple(GtnCheckpoint)
SEARCH_PROXIES = tuple(Proxy)
MICRO_POOL = 8  # micro meta-training's default architecture pool (each genotype compiles anew)
INT_LIMIT = 2**31 - 1  # counts become int32 step counters and PRNG folds inside JAX


@dataclass(frozen=True)
class Domain:
    """The interval a numeric option's values must lie in (each element, for a list option)."""

    lo: float
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")


POSITIVE = Domain(0, lo_open=True)  # sizes, counts, step sizes, epsilons
NON_NEGATIVE = Domain(0)  # seeds, loss weights, "0: off" switches
UNIT = Domain(0, 1, hi_open=True)  # momentums, Adam betas, probabilities, fractions


def option(default: Any, help: str, *, choices: type[StrEnum] | None = None,
           flags: tuple[str, ...] = (), resumable: bool = False, argument: bool = False,
           listing: str | None = None, domain: Domain | None = None, limit: int | None = None,
           path: bool = False) -> Any:
    """A config field a user sets from the command line.

    ``choices``: the Enum of allowed values (checked here, listed by --help). ``flags``: the
    option's spellings when not ``--field-name`` (e.g. ``("--inner-steps", "-T")``, or
    ``("--learn-labels/--fixed-labels",)`` for a bool). ``resumable``: may differ between the
    invocation that created a run directory and one that resumes it. ``argument``: positional.
    ``listing``: a tuple field given as ``csv`` (one comma-separated value) or ``repeat``
    (the option repeated). ``domain``: the interval a number must lie in; ``limit``: the
    largest sane count; ``path``: a file or folder name, which may not be empty. All three are
    checked by ``check_values``, once, whichever way the config was built.
    """
    meta = {"help": help, "choices": choices, "flags": flags, "resumable": resumable,
            "argument": argument, "listing": listing, "domain": domain, "limit": limit,
            "path": path}
    return field(default=default, metadata=meta)


def resumable_keys(cls) -> frozenset[str]:
    """The fields of ``cls`` that may change when a run directory is resumed."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))


@functools.cache
def _field_types(cls) -> dict[str, tuple[tuple[type, ...], bool, bool]]:
    """Per field: (its scalar types, whether None is allowed, whether it is a tuple)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) is ClassVar:
            continue
        args = typing.get_args(hint)
        optional = type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [hint]
        base = inner[0]
        many = typing.get_origin(base) is tuple
        scalar = typing.get_args(base)[0] if many else base
        out[name] = ((int, float) if scalar is float else (scalar,), optional, many)
    return out


def _type_name(types: tuple[type, ...]) -> str:
    return {int: "a whole number", float: "a number", str: "a string",
            bool: "true or false"}.get(types[-1], types[-1].__name__)


def check_values(cfg) -> None:
    """Every field of its declared type, every float finite, every count within int32 and its
    ``limit``, every number in its ``domain``, every path non-empty.

    Run first in each config's ``__post_init__``: NaN passes every ``<``/``>`` test after it, a
    string from a hand-edited config.json fails deep inside a command, and a negative
    learning rate or a momentum of 5 trains to nonsense without an error."""
    types = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        allowed, optional, many = types[f.name]
        if v is None:
            if optional:
                continue
            raise ConfigError(f"{f.name} may not be empty (null)")
        if many and isinstance(v, list):
            v = tuple(v)
            object.__setattr__(cfg, f.name, v)
        values = v if many else (v,)
        if many and not isinstance(v, tuple):
            raise ConfigError(f"{f.name} must be a list, got {v!r:.60}")
        for x in values:
            ok = (isinstance(x, bool) == (bool in allowed)) and isinstance(x, allowed)
            if not ok and not (f.metadata.get("choices") and isinstance(x, StrEnum)):
                raise ConfigError(f"{f.name} must be {_type_name(allowed)}, got {x!r:.60}")
            if isinstance(x, bool) or isinstance(x, str):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{f.name} must be a finite number, got {x}")
            if isinstance(x, int) and abs(x) > INT_LIMIT:
                raise ConfigError(f"{f.name} must be at most {INT_LIMIT:,} in size, got {x}")
            limit, domain = f.metadata.get("limit"), f.metadata.get("domain")
            if limit is not None and x > limit:
                raise ConfigError(f"{f.name} must be at most {limit:,}, got {x:,}")
            if domain is not None and x not in domain:
                raise ConfigError(f"{f.name} must be {domain}, got {x!r}")
        if float in allowed and not many and isinstance(v, int):
            object.__setattr__(cfg, f.name, float(v))  # config.json and comparisons see 2.0
        if f.metadata.get("path") and isinstance(v, str) and not v.strip():
            raise ConfigError(f"{f.name} is an empty path; give a file or folder name")


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

    out: str = option("runs/gtn", "Run directory (created, or resumed if it exists).", resumable=True,
                      path=True)
    dataset: str = option("mnist", "Data set.", choices=Dataset)
    data_dir: str | None = option(None, DATA_DIR_HELP, resumable=True, path=True)
    preset: str = option(DEFAULT_PRESET, "Named settings: tiny (tests: seconds; a search-space "
                         "learner at 4 channels, micro from a pool of one genotype: 2.5-2.7 "
                         "min, nearly all one compile), cpu (minutes on 2 cores), cpu-conv (the "
                         "paper's conv learner, 10-13 min on 2 AVX-512 cores, 17-18 with "
                         "AVX2; with --dataset cifar10 base_larger2 at width 8, ~20 min), "
                         "paper (the paper's, GPU); options given override them.",
                         choices=Preset)
    learner: str = option("mlp", "Meta-training learner: a fixed network or a search space "
                          "(a new architecture every outer step).", choices=LearnerName)
    learner_width: int | None = option(256, "Hidden width (fixed learners) or channels (NAS learners).",
                                       domain=POSITIVE)
    learner_cells: int = option(1, "NAS learners: cells per stage.", domain=POSITIVE)
    arch_pool: int = option(0, "NAS learners: draw each step's architecture from a fixed pool of "
                            f"this many (0: a fresh one every step; micro: {MICRO_POOL}, 1 under "
                            "tiny). Each micro genotype of the pool is a second-order program of "
                            "its own, about a minute to compile on 2 cores.", domain=NON_NEGATIVE)
    generator: str = option("mlp", "Generator network (conv is the paper's).", choices=GeneratorName)
    generator_hidden: int | None = option(64, "Width of the generator's first dense layer.",
                                          domain=POSITIVE)
    inner_steps: int = option(32, "Inner steps T.", flags=("--inner-steps", "-T"),
                              domain=POSITIVE, limit=100_000)
    batch_size: int = option(128, "Synthetic images per inner step.", flags=("--batch-size", "-B"),
                             domain=POSITIVE, limit=1_000_000)
    noise_dim: int = option(64, "Generator noise size.", domain=POSITIVE)
    curriculum: str = option("full", "What the teacher learns of its input noise.", choices=Curriculum)
    learn_labels: bool = option(False, "Meta-learn soft labels.",
                                flags=("--learn-labels/--fixed-labels",))
    init_lr: float = option(0.1, "Initial learned inner learning rate of every step.",
                            domain=POSITIVE)
    init_momentum: float = option(0.5, "Initial learned inner momentum of every step.", domain=UNIT)
    lr_max: float = option(0.6, "Bound of the learned inner lr, lr_max*sigmoid (0: unbounded "
                           "exp, the paper's).", domain=NON_NEGATIVE)
    momentum_max: float = option(0.9, "Bound of the learned momentum, <= 1 (0: unbounded exp, "
                                 "the paper's).", domain=Domain(0, 1))
    spike_factor: float = option(10.0, "Skip a meta-step whose gradient norm exceeds this x the "
                                 "running mean (0: off).", resumable=True, domain=NON_NEGATIVE)
    rollback_drop: float = option(0.03, "Validation fall below the best (fraction, e.g. 0.03) "
                                  "that restores the best state with half the meta-lr (0: off).",
                                  resumable=True, domain=UNIT)
    # The step size and the guards may change on resume: the advice after a blow-up is to resume
    # the same run with a lower --meta-lr (the optimiser state is unchanged).
    meta_lr: float = option(0.02, "Adam learning rate of the outer loop.", resumable=True,
                            domain=POSITIVE)
    meta_b1: float = option(0.9, "Outer Adam beta1.", domain=UNIT)
    meta_b2: float = option(0.9, "Outer Adam beta2.", domain=UNIT)
    meta_eps: float = option(1e-5, "Outer Adam epsilon.", domain=POSITIVE)
    final_relative_lr: float = option(0.1, "Meta-lr at the end of the cosine decay, as a fraction "
                                      "of --meta-lr.", domain=Domain(0, 1, lo_open=True))
    grad_clip: float = option(10.0, "Global-norm clip of the meta-gradient (0: off).", resumable=True,
                              domain=NON_NEGATIVE)
    iterations: int = option(1100, "Outer (meta) steps.", resumable=True,
                             domain=POSITIVE, limit=10_000_000)
    time_budget: float | None = option(None, "Stop after the outer step that passes this many "
                                       "seconds of this invocation (checkpointed; the same "
                                       "command resumes and ends as a run never stopped).",
                                       resumable=True, domain=POSITIVE)
    num_learners: int = option(1, "Fresh learners per outer step (vmapped, averaged).",
                               domain=POSITIVE, limit=100_000)
    meta_batch_size: int = option(1024, "Real images per meta-loss batch.",
                                  domain=POSITIVE, limit=1_000_000)
    intermediate_every: int = option(0, "Real-data loss every U inner steps (0: final only).",
                                     domain=NON_NEGATIVE)
    intermediate_weight: float = option(1.0, "Weight of the intermediate real-data losses.",
                                        domain=NON_NEGATIVE)
    remat: str = option("auto", "Recomputation in the unroll's backward pass (auto: none for the "
                        "MLP learners and small fixed conv learners, step for larger ones and "
                        "search spaces); the same numbers, other time and memory.", choices=Remat,
                        resumable=True)
    augment: bool = option(False, "Crop+flip the meta-loss batches (the paper's CIFAR-10 setting).",
                           flags=("--augment/--no-augment",))
    seed: int = option(0, "Root PRNG seed.", domain=NON_NEGATIVE)
    split_seed: int = option(0, "Seed of the train/validation split.", domain=NON_NEGATIVE)
    log_every: int = option(10, "Outer steps between log rows.", resumable=True, domain=POSITIVE)
    eval_every: int = option(50, "Outer steps between validation learners (0: only at the end).",
                             resumable=True, domain=NON_NEGATIVE)
    eval_subset: int = option(10_000, "Validation images the periodic validation learner is "
                              "scored on.", resumable=True, domain=POSITIVE)
    checkpoint_every: int = option(50, "Outer steps between checkpoints.", resumable=True,
                                   domain=POSITIVE)
    samples_every: int = option(0, "Outer steps between curriculum PNGs (0: only at the end).",
                                resumable=True, domain=NON_NEGATIVE)
    max_nonfinite: int = option(5, "Consecutive non-finite meta-steps that stop the run.",
                                resumable=True, domain=POSITIVE)
    devices: int = option(1, "Devices the learners are sharded over (0: all, every process's).",
                          resumable=True, domain=NON_NEGATIVE)
    coordinator: str | None = option(None, "Multi-process: HOST:PORT of process 0 (default "
                                     "$JAX_COORDINATOR_ADDRESS).", resumable=True)
    num_processes: int | None = option(None, "Multi-process: number of processes (default "
                                       "$JAX_NUM_PROCESSES).", resumable=True, domain=POSITIVE)
    process_id: int | None = option(None, "Multi-process: this process's id, 0..n-1 (default "
                                    "$JAX_PROCESS_ID).", resumable=True, domain=NON_NEGATIVE)

    def __post_init__(self):
        check_values(self)
        if self.learner not in FIXED_LEARNERS:  # a search space, by any of its names
            try:
                object.__setattr__(self, "learner", get_space(self.learner).name)
            except GtnError:
                pass  # check_choices names the valid ones
        check_choices(self)
        if self.spike_factor and self.spike_factor <= 1:
            raise ConfigError(f"spike_factor must be > 1 (or 0: off), got {self.spike_factor}")
        check_schedule(self.init_lr, self.lr_max, self.init_momentum, self.momentum_max)
        if self.learner == "micro" and not self.arch_pool:
            # Each micro genotype has its own parameter shapes, so its own second-order program
            # (about a minute to compile on 2 cores): a fresh one every step would compile every
            # step. Meta-training draws from a fixed pool instead (--arch-pool to change it);
            # under `tiny`, a pool of one, so that tiny stays seconds for every learner.
            object.__setattr__(self, "arch_pool", 1 if self.preset == "tiny" else MICRO_POOL)
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

    gtn: str = option("runs/gtn", "Run directory of `gtn-nas meta-train`.", path=True)
    data_dir: str | None = option(None, DATA_DIR_HELP, path=True)
    num_seeds: int = option(5, "Fresh learners (new seeds) per side.",
                            domain=POSITIVE, limit=10_000)
    seed: int = option(1000, "Seed of the fresh learners (none of the meta-training ones).",
                       domain=NON_NEGATIVE)
    steps: int | None = option(None, "Inner steps (default: the GTN's T).",
                               domain=POSITIVE, limit=100_000)
    real_lrs: tuple[float, ...] = option((0.01, 0.03, 0.1, 0.3, 1.0), "Grid of real-data "
                                         "learning rates.", listing="csv", domain=NON_NEGATIVE)
    real_momentums: tuple[float, ...] = option((0.0, 0.5, 0.9), "Grid of real-data momentums.",
                                               listing="csv", domain=UNIT)
    learner: str | None = option(None, "Evaluate another fixed learner than the meta-training "
                                 "one.", choices=_choices("FixedLearner", FIXED_LEARNERS))
    out: str | None = option(None, "Result JSON (default GTN_RUN/evaluate.json).", path=True)
    curve: bool = option(True, "Also test accuracy after 1, 2, 4, ... steps (compiles each "
                         "length).", flags=("--curve/--no-curve",))
    checkpoint: str = option("best", GTN_CHECKPOINT_HELP, choices=GtnCheckpoint)

    def __post_init__(self):
        check_values(self)
        check_choices(self)
        if not self.real_lrs or not self.real_momentums:
            raise ConfigError("the real-data grid needs at least one learning rate and momentum")


# ---------------------------------------------------------------------------------------------
# search and rank


@dataclass(frozen=True)
class SearchConfig:
    """`gtn-nas search`: architecture search scored by proxies; saved as DIR/config.json.

    ``strategy`` random samples as below; evolution and local propose from the scores of the first
    proxy; cascade runs ``stages`` (gtn_nas.search.cascade), whose proxies become ``proxies``.

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

    gtn: str = option("runs/gtn", "Run directory of `gtn-nas meta-train`.", path=True)
    out: str = option("runs/search", "Search directory (created, or resumed if it exists).",
                      resumable=True, path=True)
    space: str = option("nb201", "Search space.", choices=SpaceName)
    proxies: tuple[str, ...] = option(("gtn",), "Comma-separated proxies; the first ranks the "
                                      "leaderboard.", choices=Proxy, flags=("--proxy",),
                                      listing="csv", resumable=True)
    vote: tuple[str, ...] = option((), "vote proxy: the proxies of --proxy it aggregates by "
                                   "log-rank (default: every other one).", choices=Proxy,
                                   flags=("--vote",), listing="csv", resumable=True)
    strategy: str = option("random", "How architectures are proposed: random (architecture i = "
                           "fold_in(PRNGKey(seed), i)), evolution (regularized evolution on the "
                           "first proxy), local (best-improvement local search), cascade "
                           "(--stages, successive halving).", choices=StrategyName)
    stages: tuple[str, ...] = option((), "cascade: comma-separated stages, cheapest first; a "
                                     "stage is a PROXY, optionally STRATEGY: before it, @STEPS "
                                     "and /CxN (sizes) after it, e.g. "
                                     "evolution:vote,gtn,real@288/4x1 (default "
                                     f"{','.join(DEFAULT_STAGES)}).", listing="csv")
    eta: float = option(8.0, "cascade: each stage keeps the best 1/eta of the one before.",
                        domain=Domain(1, lo_open=True))
    explore_share: float = option(DEFAULT_EXPLORE_SHARE, "cascade with --time-budget: the share "
                                  "of it the first stage proposes for; later stages re-score "
                                  "best first in the rest (lower it for costly later stages).",
                                  domain=Domain(0, 1, lo_open=True))
    population: int = option(20, "evolution: population size.", domain=POSITIVE, limit=100_000)
    tournament: int = option(5, "evolution: members drawn per tournament.", domain=POSITIVE,
                             limit=100_000)
    budget: int = option(50, "Architectures to score (indices 0..N-1; 0: no count limit); a "
                         "cascade's first stage scores N, each later one 1/eta of the one "
                         "before.", resumable=True, domain=NON_NEGATIVE, limit=10_000_000)
    time_budget: float | None = option(None, "Stop starting new architectures after this many "
                                       "seconds (the whole invocation).", resumable=True,
                                       domain=POSITIVE)
    preset: str = option(DEFAULT_PRESET, "Named settings: tiny, cpu (cpu-conv: the same), paper; "
                         "options given override them.", choices=Preset, resumable=True)
    data_dir: str | None = option(None, DATA_DIR_HELP, resumable=True, path=True)
    seed: int = option(0, "Search seed: architecture i is fold_in(PRNGKey(seed), i).",
                       domain=NON_NEGATIVE)
    channels: int | None = option(8, "Channels C of the scored networks (None: the GTN's NAS "
                                  "learner's or the space's).", domain=POSITIVE)
    cells: int | None = option(1, "Cells N per stage of the scored networks.", domain=POSITIVE)
    steps: int | None = option(None, "gtn proxy: inner steps on the curriculum (default: the "
                               "GTN's T).", domain=POSITIVE, limit=100_000)
    real_steps: int | None = option(None, "real proxy: real-data SGD steps (default: --steps).",
                                    domain=POSITIVE, limit=10_000_000)
    real_lr: float = option(0.1, "real proxy: learning rate.", domain=POSITIVE)
    real_momentum: float = option(0.9, "real proxy: momentum.", domain=UNIT)
    real_batch_size: int | None = option(None, "real proxy: batch size (default: the GTN's).",
                                         domain=POSITIVE)
    real_schedule: str = option("constant", "real proxy: constant lr, or cosine decay to 0.",
                                choices=RealSchedule)
    gtn_bn: str = option("synthetic", "gtn proxy: batch-norm statistics of the eval: synthetic "
                         "(the last synthetic batch's, as meta-training evaluates) or real "
                         "(recomputed on one fixed real training batch of the GTN's batch size).",
                         choices=GtnBN)
    eval_subset: int = option(2000, "Validation images every proxy is scored on.", domain=POSITIVE)
    program: str = option("auto", "exact (compile per architecture), composed (nb201: per-op "
                          "programs shared by all), shared (nb201: one supernet program), auto "
                          "(nb201: shared on accelerators, composed on CPU; micro: exact).",
                          choices=Program)
    top_k: int = option(10, "Write top/NN.json for the best K.", resumable=True, domain=POSITIVE)
    archs: tuple[str, ...] = option((), "Score this genotype string instead of sampling "
                                    "(repeatable; index i = the i-th).", flags=("--arch",),
                                    listing="repeat")
    arch_file: str | None = option(None, "Score the genotype strings of this file, one per line, "
                                   "instead of sampling.", path=True)
    zc_batch_size: int = option(64, "Zero-cost proxies: images of the search's one fixed "
                                "training batch.", domain=POSITIVE)
    dataset: str | None = option(None, "Must match the GTN's data set (default: the GTN's).",
                                 choices=Dataset)
    checkpoint: str = option("best", GTN_CHECKPOINT_HELP, choices=GtnCheckpoint)
    # Fan-out. This process scores the indices i with i % num_shards == shard (shard None:
    # $JAX_PROCESS_ID of $JAX_NUM_PROCESSES when set, else 0 of 1); ``workers`` > 1 splits that
    # share again over as many local worker processes, one per GPU where there are GPUs.
    num_shards: int = option(1, "Processes/hosts sharing this search (default $JAX_NUM_PROCESSES "
                             "or 1).", resumable=True, domain=POSITIVE)
    shard: int | None = option(None, "This process's shard, 0..num_shards-1: it scores indices "
                               "i % num_shards == shard (default $JAX_PROCESS_ID).", resumable=True,
                               domain=NON_NEGATIVE)
    workers: int = option(1, "Local worker processes (one per GPU where there are GPUs).",
                          resumable=True, domain=POSITIVE)

    def __post_init__(self):
        if isinstance(self.archs, str):
            object.__setattr__(self, "archs", (self.archs,))
        check_values(self)
        space = get_space(self.space)
        object.__setattr__(self, "space", space.name)
        if self.arch_file is not None:
            from_file = read_arch_file(self.arch_file, space)
            if self.archs and tuple(self.archs) != from_file:
                raise ConfigError("give the architectures with --arch or --arch-file, not both")
            object.__setattr__(self, "archs", from_file)
        object.__setattr__(self, "archs", tuple(space.from_str(a).to_str() for a in self.archs))
        if self.archs and self.budget > len(self.archs):
            raise ConfigError(f"--budget {self.budget} exceeds the {len(self.archs)} given "
                              "architectures")
        if self.strategy == "cascade":
            self._cascade_proxies()
        elif self.stages:
            raise ConfigError(f"--stages needs --strategy cascade (this search is "
                              f"--strategy {self.strategy})")
        proxies = tuple(str(p).strip().lower() for p in self.proxies)
        if not proxies:
            raise ConfigError(f"give at least one proxy: {', '.join(SEARCH_PROXIES)}")
        if len(set(proxies)) != len(proxies):
            raise ConfigError(f"proxy listed twice in {','.join(proxies)}")
        object.__setattr__(self, "proxies", proxies)
        object.__setattr__(self, "vote", tuple(str(p).strip().lower() for p in self.vote))
        check_choices(self)
        self._check_vote()
        zero_cost = [p for p in proxies if p in ZERO_COST_PROXIES]
        if zero_cost and self.space != "nb201":
            raise ConfigError(f"zero-cost proxies ({', '.join(zero_cost)}) are defined on the "
                              f"NAS-Bench-201 network; use --space nb201")
        if zero_cost and self.zc_batch_size < 2:
            raise ConfigError(f"--zc-batch-size must be at least 2, got {self.zc_batch_size}")
        if self.program in ("shared", "composed") and self.space != "nb201":
            raise ConfigError(f"--program {self.program} exists only for the nb201 space (micro "
                              "genotypes differ in parameter shapes); use exact or auto")
        if self.shard is not None and not 0 <= self.shard < self.num_shards:
            raise ConfigError(f"--shard must be in [0, {self.num_shards}) for --num-shards "
                              f"{self.num_shards}, got {self.shard}")
        if not self.budget and self.time_budget is None and not self.archs:
            raise ConfigError("give --budget N (architectures) or --time-budget SECONDS")
        if self.strategy != "random" and (self.num_shards > 1 or self.shard is not None
                                          or self.workers > 1):
            raise ConfigError(f"--strategy {self.strategy} runs in one process for now: its "
                              "proposals depend on the scores before them; drop --workers and "
                              "--num-shards, or use --strategy random")
        if self.tournament > self.population:
            raise ConfigError(f"--tournament {self.tournament} exceeds --population "
                              f"{self.population}: a tournament draws members of the population")
        if self.strategy != "random" and self.archs:
            raise ConfigError(f"--strategy {self.strategy} proposes its own architectures; "
                              "--arch and --arch-file go with --strategy random")

    def _cascade_proxies(self) -> None:
        """A cascade's proxies are its stages' (the first stage's first): --proxy is not given."""
        stages = tuple(str(t).strip().lower().replace(" ", "") for t in self.stages) or (
            DEFAULT_STAGES)
        object.__setattr__(self, "stages", stages)
        proxies: list[str] = []
        for t in stages:
            m = STAGE.match(t)
            if m is None:
                raise ConfigError(f"cannot read stage {t!r}: write [STRATEGY:]PROXY[@STEPS]"
                                  "[/CxN], e.g. evolution:vote or real@288/4x1")
            p = m["proxy"]
            parts = (self.vote or DEFAULT_VOTE) if p == VOTE else ()
            for q in (p, *parts):
                if q not in proxies:
                    proxies.append(q)
        object.__setattr__(self, "proxies", tuple(proxies))
        if VOTE in proxies and not self.vote:
            object.__setattr__(self, "vote", DEFAULT_VOTE)

    def _check_vote(self) -> None:
        """``vote`` holds its parts (default: the other proxies), each scored by this search."""
        if VOTE not in self.proxies:
            if self.vote:
                raise ConfigError(f"--vote {','.join(self.vote)} needs vote in --proxy, e.g. "
                                  f"--proxy {','.join(self.proxies)},vote")
            return
        parts = self.vote or tuple(p for p in self.proxies if p != VOTE)
        if VOTE in parts:
            raise ConfigError("--vote lists the proxies a vote aggregates; vote cannot be one")
        if len(set(parts)) != len(parts):
            raise ConfigError(f"proxy listed twice in --vote {','.join(parts)}")
        absent = [p for p in parts if p not in self.proxies]
        if absent:
            raise ConfigError(f"--vote {','.join(absent)}: not in --proxy, so never scored; add "
                              f"{'it' if len(absent) == 1 else 'them'} to --proxy")
        if len(parts) < 2:
            raise ConfigError(f"a vote aggregates at least 2 proxies, got {','.join(parts)}; "
                              "give more in --proxy")
        object.__setattr__(self, "vote", parts)

    @property
    def scored_proxies(self) -> tuple[str, ...]:
        """The proxies each architecture is scored by (``vote`` is computed from them)."""
        return tuple(p for p in self.proxies if p != VOTE)

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
        if given.get("strategy") == "cascade":
            if proxies:
                raise ConfigError("a cascade's --stages name its proxies; drop --proxy (e.g. "
                                  f"--stages {','.join(DEFAULT_STAGES)})")
            return {"channels": 16, "cells": 5, **given}
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

    search: str = option("runs/search", "The --out directory of `gtn-nas search`.", argument=True,
                         path=True)
    truth: str = option("nb201", "nb201 (the benchmark's table) or DIR:proxy (another search's "
                        "scores).")
    truth_column: str = option("cifar10", "nb201 truth: which data set's accuracy.",
                               choices=TruthColumn)
    data_dir: str | None = option(None, DATA_DIR_HELP, path=True)
    top_fraction: float = option(0.5, "Also correlate over this top fraction by proxy estimate.",
                                 domain=Domain(0, 1, lo_open=True))
    out: str | None = option(None, "Result JSON (default SEARCH/rank.json).", path=True)
    plots: str | None = option(None, "Folder for the scatter PNGs (default SEARCH/plots).",
                               path=True)

    def __post_init__(self):
        check_values(self)
        if self.truth != "nb201":
            folder, sep, proxy = self.truth.rpartition(":")
            if not sep or not folder:
                raise ConfigError(f"--truth must be nb201 or DIR:proxy (proxy one of "
                                  f"{', '.join(SEARCH_PROXIES)}), got {self.truth!r}")
            if proxy not in SEARCH_PROXIES:
                raise ConfigError(f"truth proxy must be one of {', '.join(SEARCH_PROXIES)}, got "
                                  f"{proxy!r}")
        check_choices(self)


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
                      "--top one NN/ per architecture).", resumable=True, path=True)
    arch: str = option("", "Genotype string (NB201 '|op~0|+...' or micro 'normal: ... | reduce: "
                       "...'), a top/NN.json of `gtn-nas search`, or a search directory with "
                       "--top K.")
    space: str | None = option(None, "Search space (default: inferred from the architecture).",
                               choices=SpaceName)
    top: int | None = option(None, "Retrain the best K architectures of the search directory "
                             "given as --arch, one after another.", resumable=True, domain=POSITIVE)
    dataset: str | None = option(None, "Data set (default: the search's, for a top/NN.json or "
                                 "search directory; else mnist).", choices=Dataset)
    data_dir: str | None = option(None, DATA_DIR_HELP, resumable=True, path=True)
    preset: str = option(DEFAULT_PRESET, "Named settings: tiny (tests, seconds), cpu (>=99% MNIST "
                         "on 2 cores; cpu-conv: the same), paper (NAO's 600-epoch recipe, GPU).",
                         choices=Preset)
    channels: int | None = option(None, "C, channels of the first stage (default: the search's, "
                                  "for a search result, else --fallback-channels).",
                                  domain=POSITIVE)
    cells: int | None = option(None, "N, cells per stage (default: the search's, else "
                               "--fallback-cells).", domain=POSITIVE)
    fallback_channels: int = option(8, "C when neither --channels nor the search result gives "
                                    "one.", resumable=True, domain=POSITIVE)
    fallback_cells: int = option(1, "N when neither --cells nor the search result gives one.",
                                 resumable=True, domain=POSITIVE)
    epochs: int = option(3, "Training epochs (cosine schedule length).",
                         domain=POSITIVE, limit=100_000)
    batch_size: int = option(128, "Images per SGD step.", flags=("--batch-size", "-B"),
                             domain=POSITIVE)
    lr: float = option(0.1, "Initial learning rate (cosine decay to --lr-min).", domain=POSITIVE)
    lr_min: float = option(0.0, "Final learning rate.", domain=NON_NEGATIVE)
    warmup_epochs: float = option(0.0, "Linear warm-up epochs before the cosine.",
                                  domain=NON_NEGATIVE)
    momentum: float = option(0.9, "SGD momentum.", domain=UNIT)
    nesterov: bool = option(False, "Nesterov momentum.", flags=("--nesterov/--no-nesterov",))
    weight_decay: float = option(3e-4, "L2 weight decay.", domain=NON_NEGATIVE)
    grad_clip: float = option(5.0, "Global-norm gradient clip (0: off).", domain=NON_NEGATIVE)
    label_smoothing: float = option(0.0, "Label smoothing epsilon.", domain=UNIT)
    augment: str = option("auto", "auto (crop+flip for CIFAR-10, none for the MNISTs), none, "
                          "crop or crop_flip.", choices=Augment)
    cutout: int = option(0, "Cutout square side in pixels (0: off).", domain=NON_NEGATIVE)
    drop_path: float = option(0.0, "Drop-path probability of the deepest cell at the end "
                              "(ramped with depth and progress).", domain=UNIT)
    auxiliary: bool = option(False, "Auxiliary head after the second reduction.",
                             flags=("--auxiliary/--no-auxiliary",))
    aux_weight: float = option(0.4, "Loss weight of the auxiliary head.", domain=NON_NEGATIVE)
    dropout: float = option(0.0, "Dropout before the classifier.", domain=UNIT)
    bn_momentum: float = option(0.9, "Weight of the old batch-norm statistic.", domain=UNIT)
    activation: str = option("leaky_relu", "leaky_relu (as the GTN learners searched with) or "
                             "relu (NB201's own).", choices=Activation)
    train_subset: int = option(0, "Train on a fixed seeded subset of this many images (0: all).",
                               domain=NON_NEGATIVE)
    eval_subset: int = option(0, "Per-epoch validation on a fixed subset of this many images "
                              "(0: all; test is always all).", domain=NON_NEGATIVE)
    eval_batch_size: int = option(1000, "Images per evaluation batch.", resumable=True,
                                  domain=POSITIVE)
    seed: int = option(0, "Seed of init, data order and augmentation.", domain=NON_NEGATIVE)
    split_seed: int = option(0, "Seed of the train/validation split.", domain=NON_NEGATIVE)
    log_every: int = option(20, "Steps between metrics rows / progress updates.", resumable=True,
                            domain=POSITIVE)
    checkpoint_every: int = option(1, "Epochs between checkpoints.", resumable=True,
                                   domain=POSITIVE)

    def __post_init__(self):
        check_values(self)
        check_choices(self)
        if self.augment == "auto" and self.dataset is not None:
            object.__setattr__(self, "augment", "crop_flip" if self.dataset == "cifar10" else "none")
        if self.space is not None:
            object.__setattr__(self, "space", get_space(self.space).name)
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


# Meta-training on a search space, per preset. `tiny`: 4 channels, not the MLP's 32 hidden units:
# a micro network's second-order step at 32 channels took ~30 s on 2 cores (a tiny run 7.5 min),
# at 4 about 2 s, so that the run is its one compile (a pool of one genotype) and seconds more.
SPACE_OVERRIDES = {"tiny": dict(learner_width=4)}


def _names_a_space(learner: Any) -> bool:
    try:
        return learner not in FIXED_LEARNERS and get_space(str(learner)) is not None
    except GtnError:
        return False


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
    if cls is MetaTrainConfig and _names_a_space(given.get("learner", values.get("learner"))):
        values.update(SPACE_OVERRIDES.get(preset, {}))
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


RUN_NAMES = {"meta-train": "meta-training", "evaluate": "evaluate", "search": "search",
             "rank": "rank", "retrain": "retrain"}


def config_kind(values: dict[str, Any]) -> type | None:
    """The config class whose fields ``values`` matches best (None for an empty mapping)."""
    if not values:
        return None
    def fit(cls) -> int:
        names = {f.name for f in dataclasses.fields(cls)}
        return len(values.keys() & names) - len(values.keys() - names)
    return max(CONFIGS, key=fit)


# Fields added since run directories were first written, and what a config without them meant.
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "SearchConfig": {"strategy": "random", "stages": [], "eta": 8.0, "explore_share": 0.7,
                     "population": 20, "tournament": 5},
}


def load_config(cls: type[C], path: Path) -> C:
    """The config saved in ``path``: every field present and of its type, none unknown, and the
    config of ``cls``'s command, not another's; anything else is a damaged file, never filled
    in with today's defaults (a missing width would silently rebuild another network).

    A field added to a config after run directories were written without it is read with the
    value the code had before it existed (``ADDED_FIELDS``)."""
    from gtn_nas.errors import CheckpointError

    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config at {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"config {path} is not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"config {path} is not a JSON object")
    kind = config_kind(values)
    if kind is not None and kind is not cls:
        raise CheckpointError(
            f"{path.parent} is not a {RUN_NAMES[cls.COMMAND]} run (its config.json is a "
            f"{RUN_NAMES[kind.COMMAND]} run's); pass the --out directory of `gtn-nas "
            f"{cls.COMMAND}`")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values = {**ADDED_FIELDS.get(cls.__name__, {}), **values}
    missing = [n for n in names if n not in values]
    unknown = sorted(set(values) - set(names))
    if missing or unknown:
        what = (f"it lacks {', '.join(missing[:5])}" if missing else
                f"it has fields gtn-nas does not know: {', '.join(unknown[:5])}")
        raise CheckpointError(f"config {path} is damaged or from another gtn-nas version: {what}")
    try:
        return cls(**values)
    except ConfigError as e:
        raise CheckpointError(f"config {path} is damaged: {e}") from None
    except TypeError as e:
        raise CheckpointError(f"config {path} does not fit {cls.__name__}: {e}") from None


CONFIGS = (MetaTrainConfig, EvaluateConfig, SearchConfig, RankConfig, RetrainConfig)
