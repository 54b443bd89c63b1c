"""Final real-data training of a searched genotype: `gtn-nas retrain`.

The recipe is NAO's/DARTS' final training (gtn-spec 3.1), every part a config knob:

* loss = CE(smooth(y), f(x)) + aux_weight * CE(smooth(y), aux(x)), the auxiliary head optional and
  label smoothing ``smooth(y) = (1 - eps) y + eps / K`` off by default;
* SGD with momentum (PyTorch's form ``buf = m buf + g``; Nesterov optional) on the gradient after
  global-norm clipping and then weight decay (PyTorch's order in NAO/DARTS);
* per-step cosine learning rate ``lr_t = lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2`` over the
  T steps after an optional linear warm-up;
* drop-path probability of cell i of n at step t: ``drop_path * (i + 1) / n * t / T`` (ramped with
  depth by the network, with training progress here), dropout before the classifier;
* augmentation on the accelerator inside the jitted step: random crop (pad 4) with or without a
  horizontal flip (``augment="auto"``: crop+flip for CIFAR-10, none for the MNISTs), then Cutout.

Data: the training split (optionally a fixed seeded subset) lives on the device; epoch e visits it
in the order ``np.random.default_rng([seed, e]).permutation``, dropping the last partial batch, and
step s draws its augmentation and drop-path randomness from ``fold_in(key, s)``. Everything is a
function of (seed, epoch, step), so a run resumed from the checkpoint saved at the end of an epoch
ends with exactly the parameters and figures of an uninterrupted run. An interrupted epoch is
restarted from its beginning.

Validation accuracy is measured after every epoch, test accuracy once at the end.

A run directory holds ``config.json`` (the resolved genotype string, space and sizes),
``metrics.jsonl`` (``kind: "train"`` rows every ``log_every`` steps, ``kind: "epoch"`` rows),
``checkpoints/`` (orbax, the whole train state, every ``checkpoint_every`` epochs),
``summary.json``, ``learning_curve.png`` and ``model.msgpack``: the trained variables
``{"params": ..., "batch_stats": ...}`` serialised with ``flax.serialization.to_bytes``. To use
them, rebuild the network with ``build_model(load_config(RetrainConfig, run_dir /
"config.json"), input_shape, 10)`` and call ``flax.serialization.from_bytes`` on a freshly
initialised variables tree, which is what ``load_model(run_dir)`` does. ``--top K`` retrains the
best K architectures of a search into ``out/NN/`` and writes their results side by side in
``out/summary.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gtn_nas.checkpoint import Checkpointer
from gtn_nas.config import PRESETS, _check_choice, _check_positive, check_numbers, load_config
from gtn_nas.data.base import DATASETS
from gtn_nas.errors import ArchitectureError, CheckpointError, ConfigError, DataError, NonFiniteError
from gtn_nas.runs import MetricsLog, check_writable, open_run_dir, read_json, write_json
from gtn_nas.ui import Reporter

Params = Any  # pytree of arrays
Variables = dict[str, Any]  # {"params": ..., "batch_stats": ...}
AUGMENTS = ("auto", "none", "crop", "crop_flip")
MODEL_FILE = "model.msgpack"
# Keys that may differ between the run that created a directory and the one resuming it.
RESUMABLE_KEYS = {"out", "data_dir", "log_every", "checkpoint_every", "eval_batch_size", "top"}


@dataclass(frozen=True)
class RetrainConfig:
    """Everything `gtn-nas retrain` needs; saved (with the arch resolved) as run_dir/config.json.

    ``arch`` is a genotype string, a ``top/NN.json`` file, or with ``top`` a search directory;
    the library resolves it to genotype strings (``resolve_archs``). ``channels``/``cells`` None
    mean the space's search-time size.
    """

    out: str = "runs/retrain"
    arch: str = ""
    space: str | None = None  # nb201 | micro; None: inferred from the string or the JSON file
    top: int | None = None  # retrain the best `top` architectures of the search directory `arch`
    dataset: str | None = None  # None: the search's, for a top/NN.json or search dir; else mnist
    data_dir: str | None = None
    preset: str = "cpu"
    channels: int | None = None  # C of the first stage
    cells: int | None = None  # N, cells per stage
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.025
    lr_min: float = 0.0
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # global-norm clip; 0 = off
    label_smoothing: float = 0.0
    augment: str = "auto"  # auto | none | crop | crop_flip
    cutout: int = 0  # side of the Cutout square in pixels; 0 = off
    drop_path: float = 0.0  # drop probability of the deepest cell at the end of training
    auxiliary: bool = False
    aux_weight: float = 0.4
    dropout: float = 0.0  # before the classifier
    bn_momentum: float = 0.9  # weight of the old BN statistic
    activation: str = "leaky_relu"  # as the GTN learners searched with; relu for NB201's own
    train_subset: int = 0  # train on a fixed seeded subset of this many images; 0 = all
    eval_subset: int = 0  # per-epoch validation on a fixed subset; 0 = all (test is always all)
    eval_batch_size: int = 1000
    seed: int = 0
    split_seed: int = 0
    log_every: int = 50  # steps between metrics rows / progress updates
    checkpoint_every: int = 1  # epochs

    def __post_init__(self):
        check_numbers(self, {"epochs": 100_000})
        if self.dataset is not None:
            _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("augment", self.augment, AUGMENTS)
        if self.augment == "auto" and self.dataset is not None:
            object.__setattr__(self, "augment", "crop_flip" if self.dataset == "cifar10" else "none")
        if self.space is not None:
            from search_spaces import get_space

            object.__setattr__(self, "space", get_space(self.space).name)
        _check_positive(self, "epochs", "batch_size", "lr", "eval_batch_size", "log_every",
                        "checkpoint_every")
        _check_positive(self, "lr_min", "warmup_epochs", "momentum", "weight_decay", "grad_clip",
                        "label_smoothing", "cutout", "drop_path", "aux_weight", "dropout",
                        "bn_momentum", "train_subset", "eval_subset", allow_zero=True)
        for name in ("channels", "cells", "top"):
            if getattr(self, name) is not None:
                _check_positive(self, name)
        for name in ("drop_path", "dropout", "label_smoothing", "bn_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.momentum >= 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0")
        if self.lr_min > self.lr:
            raise ConfigError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs "
                              f"({self.epochs})")


PRESET_VALUES: dict[str, dict[str, Any]] = {
    # tests and smoke runs: compilation dominates (about 40 CPU-seconds on 2 busy cores)
    "tiny": dict(channels=4, cells=1, epochs=2, batch_size=16, lr=0.05, weight_decay=0.0,
                 train_subset=128, eval_subset=256, eval_batch_size=256, log_every=4),
    # >= 99% MNIST test accuracy on 2 CPU cores (measured: see benchmarks/RESULTS.md)
    "cpu": dict(channels=8, cells=1, epochs=3, batch_size=128, lr=0.1, weight_decay=3e-4,
                grad_clip=5.0, log_every=20),
    # NAO's final training (gtn-spec 3.1): 600 epochs, C=36, N=6, cutout 16, drop-path keep 0.8,
    # auxiliary head 0.4, dropout keep 0.6, clip 5
    "paper": dict(channels=36, cells=6, epochs=600, batch_size=128, lr=0.025, lr_min=0.0,
                  momentum=0.9, weight_decay=3e-4, grad_clip=5.0, cutout=16, drop_path=0.2,
                  auxiliary=True, aux_weight=0.4, dropout=0.4, log_every=50),
}


def build_retrain_config(preset: str, overrides: dict[str, Any]) -> RetrainConfig:
    """Preset values overridden by the user's explicit options (None = unset)."""
    _check_choice("preset", preset, PRESETS)
    values = {**PRESET_VALUES[preset], **{k: v for k, v in overrides.items() if v is not None}}
    values["preset"] = preset
    names = {f.name for f in dataclasses.fields(RetrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown config keys for retrain: {', '.join(sorted(unknown))}")
    return RetrainConfig(**values)


# ---------------------------------------------------------------------------------------------
# Architectures: strings, search JSON files, search directories


@dataclass(frozen=True)
class ArchSpec:
    """One architecture to retrain: its canonical genotype string and space, and its origin."""

    arch: str
    space: str
    origin: str
    rank: int = 1
    dataset: str | None = None  # what the search scored it on (a search's JSON or leaderboard)
    channels: int | None = None  # the sizes it was scored at
    cells: int | None = None


_ARCH_KEYS = ("arch", "genotype", "architecture", "arch_str", "genotype_str")
_SPACE_KEYS = ("space", "search_space")


def parse_arch(s: str, space: str | None = None):
    """(genotype, space name) from a genotype string; the space is inferred when not given."""
    from search_spaces import get_space
    from search_spaces.micro import EXAMPLE as MICRO_EXAMPLE
    from search_spaces.nb201 import EXAMPLE as NB201_EXAMPLE

    if not isinstance(s, str) or not s.strip():
        raise ArchitectureError("empty architecture string; pass --arch with a genotype string, "
                                "a top/NN.json file or a search directory with --top K")
    if space is None:
        t = s.strip()
        if t.startswith("|"):
            space = "nb201"
        elif t.lower().startswith("normal"):
            space = "micro"
        else:
            raise ArchitectureError(
                f"cannot tell the search space of {s!r}: an NB201 cell reads like {NB201_EXAMPLE}, "
                f"a micro genotype like '{MICRO_EXAMPLE}'")
    sp = get_space(space)
    return sp.from_str(s), sp.name


def _spec_from_mapping(obj: Any, where: str, space: str | None, rank: int) -> ArchSpec:
    if not isinstance(obj, dict):
        raise ArchitectureError(f"{where} holds a {type(obj).__name__}, not a JSON object with "
                                f"an 'arch' field")
    value = next((obj[k] for k in _ARCH_KEYS if obj.get(k) not in (None, "")), None)
    if value is None:
        raise ArchitectureError(f"{where} has no genotype: expected a string field 'arch' "
                                f"(or {', '.join(repr(k) for k in _ARCH_KEYS[1:])}); "
                                f"found {', '.join(sorted(map(str, obj))) or 'no fields'}")
    given = space or next((obj[k] for k in _SPACE_KEYS if obj.get(k)), None)
    if isinstance(value, dict) and "normal" in value and "reduce" in value:  # a micro DAG
        from search_spaces.micro import MicroGenotype

        try:
            value = MicroGenotype(tuple(value["normal"]), tuple(value["reduce"])).to_str()
        except (TypeError, ValueError) as e:
            raise ArchitectureError(f"{where}: bad micro genotype ({e})") from None
        given = given or "micro"
    if not isinstance(value, str):
        raise ArchitectureError(f"{where}: the genotype must be a string, got {value!r:.80}")
    try:
        genotype, name = parse_arch(value, given)
    except ArchitectureError as e:
        raise ArchitectureError(f"{where}: {e}") from None
    sizes = obj.get("sizes") if isinstance(obj.get("sizes"), dict) else {}
    dataset = obj.get("dataset") if obj.get("dataset") in DATASETS else None
    whole = lambda v: v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None  # noqa: E731
    return ArchSpec(genotype.to_str(), name, where, rank, dataset, whole(sizes.get("channels")),
                    whole(sizes.get("cells")))


def _rank_of(path: Path, default: int) -> int:
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else default


def _from_search_dir(folder: Path, top: int, space: str | None) -> list[ArchSpec]:
    files = sorted((folder / "top").glob("*.json"), key=lambda p: (_rank_of(p, 10**9), p.name))
    if files:
        specs = []
        for i, p in enumerate(files[:top]):
            obj = read_json(p)
            rank = obj.get("rank") if isinstance(obj, dict) else None
            rank = rank if isinstance(rank, int) and rank > 0 else _rank_of(p, i + 1)
            specs.append(_spec_from_mapping(obj, str(p), space, rank))
        return specs
    board = folder / "leaderboard.csv"
    if board.is_file():
        with board.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [_spec_from_mapping(dict(r), f"{board} row {i + 1}", space, i + 1)
                for i, r in enumerate(rows[:top])]
    raise ArchitectureError(f"{folder} has neither top/*.json nor leaderboard.csv; pass the --out "
                            "directory of `gtn-nas search`")


def resolve_archs(arch: str, space: str | None = None, top: int | None = None) -> list[ArchSpec]:
    """The architectures ``--arch`` names: a genotype string, a JSON file with an ``arch`` field
    (and optionally ``space``), or the best ``top`` of a search directory (``top/NN.json`` in rank
    order, else the first rows of ``leaderboard.csv``)."""
    arch = (arch or "").strip()
    if not arch:
        raise ArchitectureError("no architecture: pass --arch with a genotype string, a "
                                "top/NN.json file, or a search directory with --top K")
    looks_like_path = "/" in arch or "\\" in arch or arch.lower().endswith(".json")
    path = Path(arch).expanduser()
    if top is not None:
        if not path.is_dir():
            raise ArchitectureError(f"--top needs a search directory as --arch; {arch!r} is not "
                                    "a directory")
        specs = _from_search_dir(path, top, space)
        if not specs:
            raise ArchitectureError(f"{path} lists no architectures")
        return specs
    if path.is_dir():
        raise ArchitectureError(f"{arch} is a directory; pass --top K to retrain the best K "
                                "architectures of a search, or a top/NN.json file")
    if path.is_file() or looks_like_path:
        if not path.is_file():
            raise ArchitectureError(f"architecture file {arch} does not exist")
        return [_spec_from_mapping(read_json(path), str(path), space, _rank_of(path, 1))]
    genotype, name = parse_arch(arch, space)
    return [ArchSpec(genotype.to_str(), name, "command line")]


# ---------------------------------------------------------------------------------------------
# Model, optimiser, augmentation, steps


class TrainState(NamedTuple):
    params: Params
    batch_stats: Params
    opt_state: Any
    step: jax.Array  # int32 [], optimizer steps taken


def resolve_sizes(cfg: RetrainConfig) -> RetrainConfig:
    """Fills in the space's default channels/cells so config.json holds concrete values."""
    from search_spaces import get_space

    sp = get_space(cfg.space or parse_arch(cfg.arch)[1])
    return dataclasses.replace(
        cfg, space=sp.name,
        channels=sp.defaults.channels if cfg.channels is None else cfg.channels,
        cells=sp.defaults.cells if cfg.cells is None else cfg.cells)


def build_model(cfg: RetrainConfig, input_shape, num_classes: int = 10,
                auxiliary: bool | None = None):
    """The Flax module of ``cfg.arch`` with the final-training options (BN momentum, drop-path,
    dropout, auxiliary head)."""
    from search_spaces import get_space

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


def forward_flops(model, input_shape) -> float:
    """Forward FLOPs per image (eval mode) from XLA's cost analysis of the lowered, uncompiled
    program: a multiply-add counts 2."""
    shape = tuple(input_shape)
    variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False),
                               jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    cost = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def make_optimizer(cfg: RetrainConfig, steps_per_epoch: int):
    """(optax transformation, lr schedule): clip -> weight decay -> SGD momentum, cosine lr."""
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    schedule = optax.cosine_decay_schedule(cfg.lr, max(total - warm, 1), alpha=cfg.lr_min / cfg.lr)
    if warm:
        schedule = optax.join_schedules(
            [optax.linear_schedule(cfg.lr / warm, cfg.lr, warm), schedule], [warm])
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    return optax.chain(*parts), schedule


def random_crop(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop of the zero-padded image, per image, no flip (for digits)."""
    n, h, w, c = images.shape
    k_y, k_x = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
    ox = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, a, b: jax.lax.dynamic_slice(im, (a, b, 0), (h, w, c)))
    return crop(padded, oy, ox)


def cutout(key: jax.Array, x: jax.Array, size: int) -> jax.Array:
    """Zeroes a ``size`` square at a uniform random centre per image, clipped at the borders
    (DeVries & Taylor, as DARTS/NAO apply it: after normalisation, so the hole is the mean)."""
    n, h, w, _ = x.shape
    k_y, k_x = jax.random.split(key)
    cy = jax.random.randint(k_y, (n, 1, 1, 1), 0, h)
    cx = jax.random.randint(k_x, (n, 1, 1, 1), 0, w)
    rows = jnp.arange(h).reshape(1, h, 1, 1)
    cols = jnp.arange(w).reshape(1, 1, w, 1)
    half = size // 2
    hole = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return jnp.where(hole, 0.0, x)


def make_augment(cfg: RetrainConfig, mean, std) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """uint8 [B, H, W, C] -> normalised float32, augmented as ``cfg`` says (runs under jit)."""
    from gtn_nas.data import augment_crop_flip, normalize

    def augment(key: jax.Array, images: jax.Array) -> jax.Array:
        k_crop, k_cut = jax.random.split(key)
        if cfg.augment == "crop_flip":
            images = augment_crop_flip(k_crop, images)
        elif cfg.augment == "crop":
            images = random_crop(k_crop, images)
        x = normalize(images, mean, std)
        return cutout(k_cut, x, cfg.cutout) if cfg.cutout else x

    return augment


def _recipe(cfg: RetrainConfig) -> RetrainConfig:
    """The fields a compiled step depends on (paths, logging and the seed, passed as keys, not)."""
    return dataclasses.replace(cfg, out="", data_dir=None, preset="cpu", top=None, seed=0,
                               log_every=1, checkpoint_every=1, eval_batch_size=1,
                               eval_subset=0, train_subset=0, split_seed=0)


def make_train_step(cfg: RetrainConfig, model, mean, std, num_classes: int,
                    steps_per_epoch: int):
    """One jitted, donated SGD step:
    ``(state, images, labels, idx[B], k_aug, k_drop) -> (state, metrics)``.

    ``images``/``labels`` are the whole (device-resident) training split; ``idx`` picks the batch.
    The same recipe, network and data shape give the same jitted function, so a second run in one
    process (a test, a notebook) does not compile again.
    """
    return _cached_train_step(_recipe(cfg), model, tuple(mean), tuple(std), num_classes,
                              steps_per_epoch)


@functools.lru_cache(maxsize=8)
def _cached_train_step(cfg: RetrainConfig, model, mean, std, num_classes: int,
                       steps_per_epoch: int):
    tx, schedule = make_optimizer(cfg, steps_per_epoch)
    total_steps = cfg.epochs * steps_per_epoch
    augment = make_augment(cfg, mean, std)

    def loss_fn(params, batch_stats, x, y, step, k_drop):
        progress = step.astype(jnp.float32) / total_steps  # drop-path ramp over training
        out, updated = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            drop_path_scale=progress, mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(k_drop, step)})
        logits, aux = out if cfg.auxiliary else (out, None)
        targets = jax.nn.one_hot(y, num_classes)  # [B, K]
        if cfg.label_smoothing:
            targets = optax.smooth_labels(targets, cfg.label_smoothing)
        loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        total = loss
        if aux is not None:
            total = total + cfg.aux_weight * jnp.mean(optax.softmax_cross_entropy(aux, targets))
        return total, (loss, logits, updated["batch_stats"])

    def step_fn(state: TrainState, images, labels, idx, k_aug, k_drop):
        y = labels[idx]  # [B]
        x = augment(jax.random.fold_in(k_aug, state.step), images[idx])  # [B, H, W, C]
        grads, (loss, logits, stats) = jax.grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, y, state.step, k_drop)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "acc": jnp.mean(jnp.argmax(logits, -1) == y),
                   "lr": schedule(state.step), "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, stats, opt_state, state.step + 1), metrics

    return jax.jit(step_fn, donate_argnums=0)


@functools.lru_cache(maxsize=8)
def _cached_opt_init(cfg: RetrainConfig, steps_per_epoch: int):
    return jax.jit(make_optimizer(cfg, steps_per_epoch)[0].init)


def init_train_state(cfg: RetrainConfig, variables: Variables, steps_per_epoch: int) -> TrainState:
    """Step 0: the given variables and a fresh optimiser state."""
    opt_state = _cached_opt_init(_recipe(cfg), steps_per_epoch)(variables["params"])
    return TrainState(variables["params"], variables["batch_stats"], opt_state,
                      jnp.zeros((), jnp.int32))


def eval_chunk(cfg: RetrainConfig, *sizes: int) -> int:
    """Evaluation batch: ``eval_batch_size`` or the largest split if smaller (one program)."""
    return max(1, min(cfg.eval_batch_size, max(sizes)))


@functools.lru_cache(maxsize=8)
def _correct_fn(model, mean, std):
    from gtn_nas.data import normalize

    @jax.jit
    def correct(variables, x, y, valid):
        logits = model.apply(variables, normalize(x, mean, std), train=False)
        return jnp.sum((jnp.argmax(logits, -1) == y) & valid)

    return correct


def make_accuracy(model, mean, std, chunk: int):
    """accuracy(variables, images, labels): eval-mode accuracy over a split in fixed chunks
    (the tail padded and masked, so one compiled program serves every split)."""
    correct = _correct_fn(model, tuple(mean), tuple(std))

    def accuracy(variables: Variables, images: np.ndarray, labels: np.ndarray) -> float:
        n = len(labels)
        total = jnp.zeros((), jnp.int32)
        for start in range(0, n, chunk):
            x, y = images[start:start + chunk], labels[start:start + chunk]
            valid = np.arange(chunk) < len(y)
            pad = chunk - len(y)
            if pad:
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros((pad,), y.dtype)])
            total = total + correct(variables, x, y, valid)
        return float(total) / max(n, 1)

    return accuracy


# ---------------------------------------------------------------------------------------------
# Export and reload


def export_model(path: Path, variables: Variables) -> None:
    from flax import serialization

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(serialization.to_bytes(jax.device_get(variables)))
    tmp.replace(path)


def load_model(run_dir: str | Path, input_shape=None) -> tuple[RetrainConfig, Any, Variables, str]:
    """(config, module, variables, what was loaded) of a retrain run: ``model.msgpack`` when the
    run finished, else its latest checkpoint."""
    from flax import serialization

    run_dir = Path(run_dir)
    cfg = load_config(RetrainConfig, run_dir / "config.json")
    shape = tuple(input_shape or _dataset_shape(cfg.dataset))
    model = build_model(cfg, shape, 10)
    like = init_variables(model, shape, jax.random.PRNGKey(0))
    path = run_dir / MODEL_FILE
    if path.is_file():
        try:
            restored = serialization.from_bytes(like, path.read_bytes())
        except Exception as e:  # msgpack raises many types on a damaged file
            raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:100] if str(e) else ''}); re-run "
                                  "the retrain command to export it again") from None
        _check_same_shapes(like, restored, path)
        return cfg, model, jax.tree_util.tree_map(jnp.asarray, restored), str(path)
    ckpt = Checkpointer(run_dir / "checkpoints")
    latest = ckpt.latest_step()
    if latest is None:
        raise CheckpointError(f"{run_dir} has neither {MODEL_FILE} nor a checkpoint; run "
                              f"`gtn-nas retrain --out {run_dir}` first")
    tx, _ = make_optimizer(cfg, 1)
    opt_like = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype),
                                      jax.eval_shape(tx.init, like["params"]))
    state = TrainState(like["params"], like["batch_stats"], opt_like, np.zeros((), np.int32))
    state = ckpt.restore(latest, state)
    ckpt.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return cfg, model, jax.tree_util.tree_map(jnp.asarray, variables), f"checkpoint {latest}"


def _check_same_shapes(like, got, where) -> None:
    a = jax.tree_util.tree_map(np.shape, like)
    b = jax.tree_util.tree_map(np.shape, got)
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b) or a != b:
        raise CheckpointError(f"{where} does not fit the network in its config.json "
                              "(different shapes)")


def _dataset_shape(name: str) -> tuple[int, int, int]:
    from gtn_nas.data import EXPECTED_SHAPE

    return EXPECTED_SHAPE[name]


# ---------------------------------------------------------------------------------------------
# Driver


def _load_data(cfg: RetrainConfig, cache: dict | None = None):
    from gtn_nas.data import load_dataset

    cache = {} if cache is None else cache
    if cfg.dataset not in cache:
        cache[cfg.dataset] = load_dataset(cfg.dataset, cfg.data_dir, cfg.split_seed)
    return cache[cfg.dataset]


def for_spec(cfg: RetrainConfig, spec: ArchSpec, **changes) -> RetrainConfig:
    """``cfg`` for one architecture: what the user gave wins; else the data set and sizes its
    search scored it at (a CIFAR-10 search's winner is retrained on CIFAR-10), else defaults."""
    return resolve_sizes(dataclasses.replace(
        cfg, arch=spec.arch, space=spec.space, dataset=cfg.dataset or spec.dataset or "mnist",
        channels=cfg.channels if cfg.channels is not None else spec.channels,
        cells=cfg.cells if cfg.cells is not None else spec.cells, **changes))


def retrain(cfg: RetrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes) `gtn-nas retrain`: one architecture, or the best ``cfg.top`` of a search
    one after another. Returns the summary (also written as summary.json)."""
    rep = reporter or Reporter(quiet=True)
    check_writable(cfg.out)
    specs = resolve_archs(cfg.arch, cfg.space, cfg.top)
    datasets: dict = {}
    if cfg.top is None:
        (spec,) = specs
        one = for_spec(cfg, spec)
        return retrain_one(one, _load_data(one, datasets), rep, origin=spec.origin)
    if len(specs) < cfg.top:
        rep.warn(f"{cfg.arch} lists only {len(specs)} architectures; retraining those")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for spec in specs:
        sub = for_spec(cfg, spec, top=None, out=str(out / f"{spec.rank:02d}"))
        rep.info(f"[bold]rank {spec.rank}[/]: {spec.arch}")
        runs.append({"rank": spec.rank, **retrain_one(sub, _load_data(sub, datasets), rep,
                                                     origin=spec.origin)})
    summary = {"out": str(out), "search": cfg.arch, "top": cfg.top, "runs": runs,
               "best_rank": max(runs, key=lambda r: r["best_val_acc"])["rank"]}
    write_json(out / "summary.json", summary)
    rep.table("retrained architectures (test accuracy is reported, not used to choose)", [
        {"rank": r["rank"], "params": r["params"], "best_val_acc": r["best_val_acc"],
         "test_acc": r["test_acc"], "train_s": r["train_seconds"], "arch": r["arch"]}
        for r in runs])
    return summary


def retrain_one(cfg: RetrainConfig, data, rep: Reporter, origin: str = "") -> dict[str, Any]:
    """Trains (or resumes) one architecture in ``cfg.out``; ``cfg.arch`` is a genotype string."""
    from gtn_nas import plots
    from gtn_nas.training import subset
    from search_spaces import count_params

    t_invocation = time.time()
    shape, classes = data.image_shape, data.num_classes
    run_dir, _ = open_run_dir(cfg, cfg.out, ignore=RESUMABLE_KEYS)
    model = build_model(cfg, shape, classes)

    x_train, y_train = data.train.images, data.train.labels
    if cfg.train_subset:
        x_train, y_train = subset(x_train, y_train, cfg.train_subset, seed=cfg.split_seed)
    x_val, y_val = data.validation.images, data.validation.labels
    if cfg.eval_subset:
        x_val, y_val = subset(x_val, y_val, cfg.eval_subset, seed=cfg.split_seed + 1)
    n_train = len(y_train)
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {n_train} training images")
    total_steps = cfg.epochs * steps_per_epoch
    plain = build_model(cfg, shape, classes, auxiliary=False)
    params = count_params(plain, shape)  # without the auxiliary head, as papers count
    rep.info(f"{cfg.space} C={cfg.channels} N={cfg.cells} on {cfg.dataset}: {params:,} parameters, "
             f"{steps_per_epoch} steps/epoch x {cfg.epochs} epochs")

    k_init, k_aug, k_drop = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    variables = init_variables(model, shape, k_init)
    state = init_train_state(cfg, variables, steps_per_epoch)

    ckpt = Checkpointer(run_dir / "checkpoints")
    latest = ckpt.latest_step()
    if latest is not None:
        state = jax.tree_util.tree_map(jnp.asarray, ckpt.restore(latest, state))
        if latest % steps_per_epoch or int(state.step) != latest:
            raise CheckpointError(f"checkpoint {latest} in {run_dir} is not at an epoch boundary "
                                  "of this config; use a new --out directory")
        rep.info(f"resuming {run_dir} after epoch {latest // steps_per_epoch}")
    start_epoch = int(state.step) // steps_per_epoch
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=int(state.step) + 1)

    step_fn = make_train_step(cfg, model, data.mean, data.std, classes, steps_per_epoch)
    accuracy = make_accuracy(model, data.mean, data.std,
                             eval_chunk(cfg, len(data.validation), len(data.test)))
    images_dev, labels_dev = jnp.asarray(x_train), jnp.asarray(y_train)
    batch = cfg.batch_size

    def evaluate_val(st: TrainState) -> float:
        return accuracy({"params": st.params, "batch_stats": st.batch_stats}, x_val, y_val)

    epoch = start_epoch
    try:
        with rep.progress(f"retrain {cfg.space}", total=total_steps,
                          completed=int(state.step)) as bar:
            for epoch in range(start_epoch, cfg.epochs):
                order = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
                order = order[:steps_per_epoch * batch].reshape(steps_per_epoch, batch)
                order = order.astype(np.int32)
                t_epoch, pending, sums, shown = time.time(), [], np.zeros(2), 0
                for i in range(steps_per_epoch):
                    state, metrics = step_fn(state, images_dev, labels_dev, order[i], k_aug,
                                             k_drop)
                    pending.append(metrics)
                    if (i + 1) % cfg.log_every == 0 or i + 1 == steps_per_epoch:
                        got = jax.device_get(pending)
                        pending.clear()
                        loss = float(np.mean([m["loss"] for m in got]))
                        acc = float(np.mean([m["acc"] for m in got]))
                        if not np.isfinite(loss):  # before any save of this epoch's state
                            step = epoch * steps_per_epoch + i + 1
                            raise NonFiniteError(
                                f"the training loss became non-finite by step {step} (epoch "
                                f"{epoch + 1}); no model exported, checkpoints keep the last "
                                "finite epoch; lower --lr or set --grad-clip and use a new --out")
                        sums += [sum(float(m["loss"]) for m in got),
                                 sum(float(m["acc"]) for m in got)]
                        step = epoch * steps_per_epoch + i + 1
                        log.write([{"kind": "train", "step": step, "epoch": epoch + 1,
                                    "loss": loss, "acc": acc, "lr": float(got[-1]["lr"]),
                                    "grad_norm": float(got[-1]["grad_norm"])}])
                        rate = (i + 1) * batch / max(time.time() - t_epoch, 1e-9)
                        bar.update(advance=i + 1 - shown, rate=f"{rate:,.0f} img/s",
                                   epoch=f"{epoch + 1}/{cfg.epochs}", loss=loss, acc=acc)
                        shown = i + 1
                jax.block_until_ready(state)
                seconds = time.time() - t_epoch
                val = evaluate_val(state)
                row = {"kind": "epoch", "step": int(state.step), "epoch": epoch + 1,
                       "train_loss": sums[0] / steps_per_epoch,
                       "train_acc": sums[1] / steps_per_epoch, "val_acc": val,
                       "epoch_seconds": round(seconds, 3),
                       "images_per_second": round(steps_per_epoch * batch / seconds, 1)}
                log.write([row])
                bar.update(advance=0, epoch=f"{epoch + 1}/{cfg.epochs}", loss=row["train_loss"],
                           acc=row["train_acc"], val=val)
                if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    ckpt.save(int(state.step), state)
    except KeyboardInterrupt:
        ckpt.close()
        rep.info(f"interrupted in epoch {epoch + 1}; the same command resumes from the last "
                 "saved epoch")
        raise

    ckpt.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    export_model(run_dir / MODEL_FILE, variables)
    test = accuracy(variables, data.test.images, data.test.labels)
    epochs_log = [r for r in log.read() if r.get("kind") == "epoch"]
    best = max(epochs_log, key=lambda r: r["val_acc"])
    rates = [r["images_per_second"] for r in epochs_log]
    summary = {
        "run_dir": str(run_dir), "arch": cfg.arch, "space": cfg.space, "origin": origin,
        "dataset": cfg.dataset, "channels": cfg.channels, "cells": cfg.cells,
        "epochs": cfg.epochs, "steps": int(state.step),
        "params": params,
        "flops": forward_flops(plain, shape),  # forward, per image
        "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
        "final_val_acc": epochs_log[-1]["val_acc"], "test_acc": test,
        "train_seconds": round(sum(r["epoch_seconds"] for r in epochs_log), 1),
        # the first epoch includes compilation; the median is the steady rate
        "images_per_second": round(float(np.median(rates[1:] if len(rates) > 1 else rates)), 1),
        "wall_seconds": round(time.time() - t_invocation, 1),
        "model": str(run_dir / MODEL_FILE), "data_source": data.source,
    }
    write_json(run_dir / "summary.json", summary)
    plots.curves({"train": ([r["epoch"] for r in epochs_log], [r["train_acc"] for r in epochs_log]),
                  "validation": ([r["epoch"] for r in epochs_log],
                                 [r["val_acc"] for r in epochs_log])},
                 run_dir / "learning_curve.png", "epoch", "accuracy",
                 title=f"{cfg.space} on {cfg.dataset}: test {test:.4f}")
    rep.summary("retrain summary", {k: summary[k] for k in (
        "arch", "params", "flops", "best_val_acc", "final_val_acc", "test_acc",
        "images_per_second", "train_seconds", "run_dir")})
    return summary


def evaluate_runs(out: str | Path, data_dir: str | None = None, dataset: str | None = None,
                  reporter: Reporter | None = None) -> dict[str, Any]:
    """`gtn-nas retrain --eval-only`: reloads the exported model (or the latest checkpoint) of a
    run, or of every ``NN/`` run of a ``--top`` directory, and measures validation and test
    accuracy; writes ``eval.json`` beside each."""
    from gtn_nas.data import load_dataset

    rep = reporter or Reporter(quiet=True)
    out = Path(out)
    if (out / "config.json").is_file():
        dirs = [out]
    elif out.is_dir():
        dirs = sorted(d for d in out.iterdir() if (d / "config.json").is_file())
    else:
        dirs = []
    if not dirs:
        raise CheckpointError(f"{out} holds no retrain run (no config.json); pass the --out "
                              "directory of a `gtn-nas retrain`")
    results = []
    for d in dirs:
        cfg = load_config(RetrainConfig, d / "config.json")
        name = dataset or cfg.dataset
        trained = _dataset_shape(cfg.dataset)
        data = load_dataset(name, data_dir or cfg.data_dir, cfg.split_seed)
        if tuple(data.image_shape) != tuple(trained):
            raise DataError(f"the model in {d} was trained on {cfg.dataset} images of shape "
                            f"{trained}; {name} images have shape {data.image_shape}")
        cfg, model, variables, source = load_model(d, data.image_shape)
        accuracy = make_accuracy(model, data.mean, data.std,
                                 eval_chunk(cfg, len(data.validation), len(data.test)))
        row = {"run_dir": str(d), "arch": cfg.arch, "space": cfg.space, "dataset": name,
               "loaded": source,
               "val_acc": accuracy(variables, data.validation.images, data.validation.labels),
               "test_acc": accuracy(variables, data.test.images, data.test.labels)}
        write_json(d / "eval.json", row)
        results.append(row)
    rep.table("retrained models, evaluated", results,
              ["run_dir", "loaded", "val_acc", "test_acc"])
    return results[0] if len(results) == 1 and dirs[0] == out else {"runs": results}


__all__ = ["RetrainConfig", "PRESET_VALUES", "ArchSpec", "build_retrain_config", "parse_arch",
           "resolve_archs", "build_model", "load_model", "retrain", "retrain_one",
           "evaluate_runs", "make_optimizer", "cutout", "random_crop"]
