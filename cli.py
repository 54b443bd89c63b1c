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
    inner_steps: Annotated[Optional[int], typer.Option("--inner-steps", "-T", help="Inner steps T.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-B", help="Synthetic images per inner step.")] = None,
    noise_dim: Annotated[Optional[int], typer.Option(help="Generator noise size.")] = None,
    curriculum: Annotated[Optional[str], typer.Option(help="none | all_shuffled | batch_shuffled | full.")] = None,
    learn_labels: Annotated[Optional[bool], typer.Option("--learn-labels/--fixed-labels", help="Meta-learn soft labels.")] = None,
    meta_lr: Annotated[Optional[float], typer.Option(help="Adam learning rate of the outer loop.")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Outer (meta) steps.")] = None,
    num_learners: Annotated[Optional[int], typer.Option(help="Fresh learners per outer step.")] = None,
    intermediate_every: Annotated[Optional[int], typer.Option(help="Real-data loss every U inner steps (0: final only).")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Global-norm clip of the meta-gradient (0: off).")] = None,
    remat: Annotated[Optional[str], typer.Option(help="none | step | nested.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Root PRNG seed.")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="Outer steps between log rows.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Outer steps between validation learners.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Outer steps between checkpoints.")] = None,
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Meta-train a GTN (checkpointed; re-run the same command to resume)."""
    overrides = dict(out=out, dataset=dataset, data_dir=data_dir, learner=learner,
                     learner_width=learner_width, generator=generator, inner_steps=inner_steps,
                     batch_size=batch_size, noise_dim=noise_dim, curriculum=curriculum,
                     learn_labels=learn_labels, meta_lr=meta_lr, iterations=iterations,
                     num_learners=num_learners, intermediate_every=intermediate_every,
                     grad_clip=grad_clip, remat=remat, seed=seed, log_every=log_every,
                     eval_every=eval_every, checkpoint_every=checkpoint_every)

    def go():
        from gtn_nas import meta_train as lib

        cfg = build_config(MetaTrainConfig, "meta-train", preset, overrides)
        rep = _reporter(quiet, json_)
        summary = lib.meta_train(cfg, rep)
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
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Fresh learners trained T steps on GTN data vs on real data with tuned lr/momentum."""
    def go():
        from gtn_nas import evaluate as lib

        cfg = EvaluateConfig(gtn=gtn, data_dir=data_dir, num_seeds=num_seeds, seed=seed,
                             steps=steps, learner=learner, out=out)
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


# --- retrain command (issue #4) ---


# --- show command (issue #5) ---


def main() -> None:
    from gtn_nas import enable_compilation_cache

    enable_compilation_cache()
    app()


if __name__ == "__main__":
    sys.exit(main())
