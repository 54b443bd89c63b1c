"""gtn-nas command line: each command builds one config and calls one library function.

User errors (bad options, missing data, corrupt checkpoints, NaN meta-training) print one line
to stderr and exit with code 2; Ctrl-C saves state and exits with 130.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Callable, Optional

import typer

from gtn_nas.config import EvaluateConfig, MetaTrainConfig, build_config
from gtn_nas.errors import GtnError

app = typer.Typer(
    name="gtn-nas", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Generative Teaching Networks for neural architecture search (Such et al. 2019).")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Json = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (implies --quiet).")]
Preset = Annotated[str, typer.Option(help="tiny (tests, seconds) | cpu (~15 min on 2 cores) | paper (GPU).")]
DataDir = Annotated[Optional[str], typer.Option(
    help="Folder with the raw dataset files (or a tfds data dir). Default: $GTN_NAS_DATA_DIR, "
         "else ../shared/data beside this repository.")]

GtnCheckpoint = Annotated[str, typer.Option(
    help="The GTN's meta-parameters to use: best (highest validation during meta-training) | last.")]
Coordinator = Annotated[Optional[str], typer.Option(
    help="Multi-process: HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS).")]
NumProcesses = Annotated[Optional[int], typer.Option(
    help="Multi-process: number of processes (default $JAX_NUM_PROCESSES).")]
ProcessId = Annotated[Optional[int], typer.Option(
    help="Multi-process: this process's id, 0..n-1 (default $JAX_PROCESS_ID).")]


def _run(fn: Callable[[], Any], json_mode: bool) -> None:
    """Runs a library call; turns user errors into one line and an exit code."""
    try:
        result = fn()
    except GtnError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; state saved, run the same command again to resume", err=True)
        raise typer.Exit(130)
    if json_mode and result is not None:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=float))


def _config_options(given: dict[str, Any], cls, exclude=()) -> dict[str, Any]:
    """A command's options that are fields of its config (every field has one: tests/test_cli.py)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    return {k: v for k, v in given.items() if k in names}


def _reporter(quiet: bool, json_mode: bool):
    from gtn_nas.ui import Reporter

    return Reporter(quiet=quiet, json_mode=json_mode)


@app.command("meta-train")
def meta_train_cmd(
    out: Annotated[str, typer.Option(help="Run directory (created, or resumed if it exists).")] = "runs/gtn",
    dataset: Annotated[Optional[str], typer.Option(help="mnist | fashion_mnist | cifar10.")] = None,
    data_dir: DataDir = None,
    preset: Preset = "cpu",
    learner: Annotated[Optional[str], typer.Option(help="base_fc | base_larger2 | mlp | linear | nb201 | micro.")] = None,
    learner_width: Annotated[Optional[int], typer.Option(help="Hidden width (fixed learners) or channels (NAS learners).")] = None,
    generator: Annotated[Optional[str], typer.Option(help="conv (the paper's) | mlp.")] = None,
    generator_hidden: Annotated[Optional[int], typer.Option(help="Width of the generator's first dense layer.")] = None,
    inner_steps: Annotated[Optional[int], typer.Option("--inner-steps", "-T", help="Inner steps T.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-B", help="Synthetic images per inner step.")] = None,
    noise_dim: Annotated[Optional[int], typer.Option(help="Generator noise size.")] = None,
    curriculum: Annotated[Optional[str], typer.Option(help="none | all_shuffled | batch_shuffled | full.")] = None,
    learn_labels: Annotated[Optional[bool], typer.Option("--learn-labels/--fixed-labels", help="Meta-learn soft labels.")] = None,
    meta_lr: Annotated[Optional[float], typer.Option(help="Adam learning rate of the outer loop.")] = None,
    init_lr: Annotated[Optional[float], typer.Option(help="Initial learned inner learning rate of every step.")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Outer (meta) steps.")] = None,
    num_learners: Annotated[Optional[int], typer.Option(help="Fresh learners per outer step.")] = None,
    intermediate_every: Annotated[Optional[int], typer.Option(help="Real-data loss every U inner steps (0: final only).")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Global-norm clip of the meta-gradient (0: off).")] = None,
    lr_max: Annotated[Optional[float], typer.Option(help="Bound of the learned inner lr, lr_max*sigmoid (0: unbounded exp, the paper's).")] = None,
    momentum_max: Annotated[Optional[float], typer.Option(help="Bound of the learned momentum, <= 1 (0: unbounded exp, the paper's).")] = None,
    spike_factor: Annotated[Optional[float], typer.Option(help="Skip a meta-step whose gradient norm exceeds this x the running mean (0: off).")] = None,
    rollback_drop: Annotated[Optional[float], typer.Option(help="Validation fall below the best (fraction, e.g. 0.03) that restores the best state with half the meta-lr (0: off).")] = None,
    remat: Annotated[Optional[str], typer.Option(help="none | step | nested.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Root PRNG seed.")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="Outer steps between log rows.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Outer steps between validation learners.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Outer steps between checkpoints.")] = None,
    devices: Annotated[Optional[int], typer.Option(help="Devices the learners are sharded over (0: all, every process's).")] = None,
    learner_cells: Annotated[Optional[int], typer.Option(help="NAS learners: cells per stage.")] = None,
    arch_pool: Annotated[Optional[int], typer.Option(help="NAS learners: draw each step's architecture from a fixed pool of this many (0: a fresh one every step).")] = None,
    init_momentum: Annotated[Optional[float], typer.Option(help="Initial learned inner momentum of every step.")] = None,
    meta_b1: Annotated[Optional[float], typer.Option(help="Outer Adam beta1.")] = None,
    meta_b2: Annotated[Optional[float], typer.Option(help="Outer Adam beta2.")] = None,
    meta_eps: Annotated[Optional[float], typer.Option(help="Outer Adam epsilon.")] = None,
    final_relative_lr: Annotated[Optional[float], typer.Option(help="Meta-lr at the end of the cosine decay, as a fraction of --meta-lr.")] = None,
    meta_batch_size: Annotated[Optional[int], typer.Option(help="Real images per meta-loss batch.")] = None,
    intermediate_weight: Annotated[Optional[float], typer.Option(help="Weight of the intermediate real-data losses.")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Crop+flip the meta-loss batches (the paper's CIFAR-10 setting).")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="Seed of the train/validation split.")] = None,
    eval_subset: Annotated[Optional[int], typer.Option(help="Validation images the periodic validation learner is scored on.")] = None,
    samples_every: Annotated[Optional[int], typer.Option(help="Outer steps between curriculum PNGs (0: only at the end).")] = None,
    max_nonfinite: Annotated[Optional[int], typer.Option(help="Consecutive non-finite meta-steps that stop the run.")] = None,
    coordinator: Coordinator = None,
    num_processes: NumProcesses = None,
    process_id: ProcessId = None,
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Meta-train a GTN (checkpointed; re-run the same command to resume)."""
    overrides = _config_options(locals(), MetaTrainConfig, exclude=("preset",))

    def go():
        from gtn_nas import meta_train as lib

        cfg = build_config(MetaTrainConfig, "meta-train", preset, overrides)
        rep = _reporter(quiet, json_)
        summary = lib.meta_train(cfg, rep)
        if not summary.get("runtime", {}).get("process_index", 0) == 0:
            return None  # other processes of a multi-process run stay silent
        rep.summary("meta-train summary", {k: v for k, v in summary.items()
                                           if k not in ("inner_lr", "inner_momentum")})
        return summary

    _run(go, json_)


@app.command("evaluate")
def evaluate_cmd(
    gtn: Annotated[str, typer.Option(help="Run directory of `gtn-nas meta-train`.")] = "runs/gtn",
    data_dir: DataDir = None,
    num_seeds: Annotated[int, typer.Option(help="Fresh learners (new seeds) per side.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fresh learners.")] = 1000,
    steps: Annotated[Optional[int], typer.Option(help="Inner steps (default: the GTN's T).")] = None,
    learner: Annotated[Optional[str], typer.Option(help="Evaluate another fixed learner than the meta-training one.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Result JSON (default RUN/evaluate.json).")] = None,
    curve: Annotated[bool, typer.Option("--curve/--no-curve", help="Also test accuracy after 1, 2, 4, ... steps (compiles each length).")] = True,
    checkpoint: GtnCheckpoint = "best",
    real_lrs: Annotated[Optional[str], typer.Option(help="Comma-separated grid of real-data learning rates (default 0.01,0.03,0.1,0.3,1).")] = None,
    real_momentums: Annotated[Optional[str], typer.Option(help="Comma-separated grid of real-data momentums (default 0,0.5,0.9).")] = None,
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Fresh learners trained T steps on GTN data vs on real data with tuned lr/momentum."""
    def go():
        from gtn_nas import evaluate as lib

        grid = {k: _float_list(k, v) for k, v in (("real_lrs", real_lrs),
                                                  ("real_momentums", real_momentums)) if v}
        cfg = EvaluateConfig(gtn=gtn, data_dir=data_dir, num_seeds=num_seeds, seed=seed,
                             steps=steps, learner=learner, out=out, curve=curve,
                             checkpoint=checkpoint, **grid)
        return lib.evaluate(cfg, _reporter(quiet, json_))

    _run(go, json_)


@app.command("datasets")
def datasets_cmd(data_dir: DataDir = None, json_: Json = False) -> None:
    """What data sets are available locally, and how to add more."""
    def go():
        from gtn_nas.data import describe_sources

        rows = describe_sources(data_dir)
        _reporter(False, json_).table("datasets", rows)
        return rows

    _run(go, json_)


# --- search and rank commands (issue #3) ---
def _float_list(name: str, value: str) -> tuple[float, ...]:
    from gtn_nas.errors import ConfigError

    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')} takes comma-separated numbers, got {value!r}") from None


def _csv_list(value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command("search")
def search_cmd(
    gtn: Annotated[str, typer.Option(help="Run directory of `gtn-nas meta-train`.")] = "runs/gtn",
    checkpoint: Annotated[Optional[str], typer.Option(
        help="The GTN's meta-parameters to use: best (highest validation during meta-training) | last.")] = None,
    out: Annotated[str, typer.Option(help="Search directory (created, or resumed if it exists).")] = "runs/search",
    space: Annotated[Optional[str], typer.Option(help="Search space: nb201 | micro.")] = None,
    proxy: Annotated[Optional[str], typer.Option(help="Comma-separated proxies: gtn, real, params; the first ranks the leaderboard.")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Architectures to score (indices 0..N-1).")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Stop starting new architectures after this many seconds.")] = None,
    arch: Annotated[Optional[list[str]], typer.Option("--arch", help="Score this genotype string instead of sampling (repeatable).")] = None,
    preset: Preset = "cpu",
    data_dir: DataDir = None,
    dataset: Annotated[Optional[str], typer.Option(help="Must match the GTN's data set (default: the GTN's).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Search seed: architecture i is fold_in(PRNGKey(seed), i).")] = None,
    channels: Annotated[Optional[int], typer.Option(help="Channels C of the scored networks (default: the GTN's NAS learner or the space's).")] = None,
    cells: Annotated[Optional[int], typer.Option(help="Cells N per stage of the scored networks.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="gtn proxy: inner steps on the curriculum (default: the GTN's T).")] = None,
    real_steps: Annotated[Optional[int], typer.Option(help="real proxy: real-data SGD steps (default: --steps).")] = None,
    real_lr: Annotated[Optional[float], typer.Option(help="real proxy: learning rate.")] = None,
    real_momentum: Annotated[Optional[float], typer.Option(help="real proxy: momentum.")] = None,
    real_batch_size: Annotated[Optional[int], typer.Option(help="real proxy: batch size (default: the GTN's).")] = None,
    real_schedule: Annotated[Optional[str], typer.Option(help="real proxy: constant lr, or cosine decay to 0.")] = None,
    eval_subset: Annotated[Optional[int], typer.Option(help="Validation images every proxy is scored on.")] = None,
    program: Annotated[Optional[str], typer.Option(help="auto | exact (compile per architecture) | shared (nb201: one program for all).")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Write top/NN.json for the best K.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local worker processes (one per GPU where there are GPUs).")] = None,
    num_shards: Annotated[Optional[int], typer.Option(help="Processes/hosts sharing this search (default $JAX_NUM_PROCESSES or 1).")] = None,
    shard: Annotated[Optional[int], typer.Option(help="This process's shard, 0..num_shards-1: it scores indices i % num_shards == shard (default $JAX_PROCESS_ID).")] = None,
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Random architecture search scored by a GTN (resumable: re-run the same command)."""
    overrides = dict(gtn=gtn, checkpoint=checkpoint, out=out, space=space, proxies=_csv_list(proxy), budget=budget,
                     time_budget=time_budget, archs=tuple(arch) if arch else None,
                     data_dir=data_dir, dataset=dataset, seed=seed, channels=channels,
                     cells=cells, steps=steps, real_steps=real_steps, real_lr=real_lr,
                     real_momentum=real_momentum, real_batch_size=real_batch_size,
                     real_schedule=real_schedule, eval_subset=eval_subset, program=program,
                     top_k=top_k, workers=workers, num_shards=num_shards, shard=shard)

    def go():
        from gtn_nas import search as lib

        cfg = lib.search_config(preset, overrides)
        return lib.search(cfg, _reporter(quiet, json_))

    _run(go, json_)


@app.command("rank")
def rank_cmd(
    search_dir: Annotated[str, typer.Argument(help="The --out directory of `gtn-nas search`.")],
    truth: Annotated[str, typer.Option(help="nb201 (the benchmark's table) or DIR:proxy (another search's scores).")] = "nb201",
    truth_column: Annotated[str, typer.Option(help="nb201 truth: cifar10 | cifar100 | imagenet16.")] = "cifar10",
    top_fraction: Annotated[float, typer.Option(help="Also correlate over this top fraction by proxy estimate.")] = 0.5,
    data_dir: DataDir = None,
    out: Annotated[Optional[str], typer.Option(help="Result JSON (default SEARCH/rank.json; plots beside it).")] = None,
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Rank correlation of a search's proxies against ground truth, with scatter plots."""
    def go():
        from gtn_nas import rank as lib
        from gtn_nas.config import RankConfig

        cfg = RankConfig(search=search_dir, truth=truth, truth_column=truth_column,
                         data_dir=data_dir, top_fraction=top_fraction, out=out)
        return lib.rank(cfg, _reporter(quiet, json_))

    _run(go, json_)


# --- retrain command (issue #4) ---
@app.command("retrain")
def retrain_cmd(
    arch: Annotated[Optional[str], typer.Option(help="Genotype string (NB201 '|op~0|+...' or micro 'normal: ... | reduce: ...'), a top/NN.json of `gtn-nas search`, or a search directory with --top K.")] = None,
    top: Annotated[Optional[int], typer.Option(help="Retrain the best K architectures of the search directory given as --arch, one after another.")] = None,
    space: Annotated[Optional[str], typer.Option(help="nb201 | micro (default: inferred from the architecture).")] = None,
    out: Annotated[str, typer.Option(help="Run directory (created, or resumed if it exists; with --top one NN/ per architecture).")] = "runs/retrain",
    dataset: Annotated[Optional[str], typer.Option(help="mnist | fashion_mnist | cifar10.")] = None,
    data_dir: DataDir = None,
    preset: Annotated[str, typer.Option(help="tiny (tests, seconds) | cpu (>=99% MNIST on 2 cores) | paper (NAO's 600-epoch recipe, GPU).")] = "cpu",
    channels: Annotated[Optional[int], typer.Option(help="C, channels of the first stage.")] = None,
    cells: Annotated[Optional[int], typer.Option(help="N, cells per stage.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (cosine schedule length).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-B", help="Images per SGD step.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Initial learning rate (cosine decay to --lr-min).")] = None,
    lr_min: Annotated[Optional[float], typer.Option(help="Final learning rate.")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help="Linear warm-up epochs before the cosine.")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum.")] = None,
    nesterov: Annotated[Optional[bool], typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="L2 weight decay.")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Global-norm gradient clip (0: off).")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing epsilon.")] = None,
    augment: Annotated[Optional[str], typer.Option(help="auto (crop+flip for CIFAR-10, none for MNISTs) | none | crop | crop_flip.")] = None,
    cutout: Annotated[Optional[int], typer.Option(help="Cutout square side in pixels (0: off).")] = None,
    drop_path: Annotated[Optional[float], typer.Option(help="Drop-path probability of the deepest cell at the end (ramped with depth and progress).")] = None,
    auxiliary: Annotated[Optional[bool], typer.Option("--auxiliary/--no-auxiliary", help="Auxiliary head after the second reduction.")] = None,
    aux_weight: Annotated[Optional[float], typer.Option(help="Loss weight of the auxiliary head.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout before the classifier.")] = None,
    activation: Annotated[Optional[str], typer.Option(help="leaky_relu (as GTN learners) | relu.")] = None,
    train_subset: Annotated[Optional[int], typer.Option(help="Train on a fixed subset of this many images (0: all).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of init, data order and augmentation.")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="Steps between metrics rows.")] = None,
    bn_momentum: Annotated[Optional[float], typer.Option(help="Weight of the old batch-norm statistic.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Epochs between checkpoints.")] = None,
    eval_batch_size: Annotated[Optional[int], typer.Option(help="Images per evaluation batch.")] = None,
    eval_subset: Annotated[Optional[int], typer.Option(help="Per-epoch validation on a fixed subset of this many images (0: all).")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="Seed of the train/validation split.")] = None,
    eval_only: Annotated[bool, typer.Option("--eval-only", help="Reload the trained model in --out and report validation/test accuracy.")] = False,
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Train searched architectures on real data to the end (checkpointed every epoch; re-run to resume)."""
    from gtn_nas.retrain import RetrainConfig

    overrides = _config_options(locals(), RetrainConfig, exclude=("preset",))

    def go():
        from gtn_nas import retrain as lib

        rep = _reporter(quiet, json_)
        if eval_only:
            return lib.evaluate_runs(out, data_dir=data_dir, dataset=dataset, reporter=rep)
        if not arch:
            raise lib.ArchitectureError("--arch is required: a genotype string, a top/NN.json "
                                        "file, or a search directory with --top K")
        cfg = lib.build_retrain_config(preset, overrides)
        return lib.retrain(cfg, rep)

    _run(go, json_)


# --- show command (issue #5) ---
@app.command("show")
def show_cmd(
    run_dir: Annotated[str, typer.Argument(help="The --out directory of meta-train, search or retrain.")],
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Draw a run's PNGs (training curves, GTN vs real, proxy scatter plots) into RUN_DIR/plots."""
    def go():
        from gtn_nas.show import show

        rep = _reporter(quiet, json_)
        result = show(run_dir)
        rep.summary(f"{result['kind']} plots", {"run_dir": result["run_dir"],
                                                 "plots": "\n".join(result["plots"]) or "none"})
        return result

    _run(go, json_)


def main() -> None:
    from gtn_nas import enable_compilation_cache
    from gtn_nas.hostmem import reuse_freed_memory

    reuse_freed_memory()  # before JAX starts its threads
    enable_compilation_cache()
    app()


if __name__ == "__main__":
    sys.exit(main())
