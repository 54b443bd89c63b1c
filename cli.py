"""gtn-nas command line: each command builds one config and calls one library function.

A command's options are generated from its config dataclass (``gtn_nas.config``): every field is
an option, declared once there with its help, choices and spellings, so the two cannot drift.
User errors (bad options, missing data, corrupt checkpoints, NaN meta-training, a full disk, a
locked run) print one line to stderr and exit with code 2, and so do the command line's own
(an unknown flag, ``-T abc``): ``OneLineErrors``. Ctrl-C and SIGTERM save state and exit 130.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import typing
from typing import Annotated, Any, Callable, Optional

import typer
import typer.core
from typer.core import TyperGroup

from gtn_nas.config import (EvaluateConfig, MetaTrainConfig, RankConfig, RetrainConfig,
                            SearchConfig, build_config, preset_values)
from gtn_nas.errors import ConfigError, GtnError

# The click that typer parses with: vendored as typer._click since typer 0.2x, the click package
# before; its exceptions are the ones to catch.
click = getattr(typer.core, "_click", None) or getattr(typer.core, "click")
Abort = getattr(typer.core, "Abort", None) or click.exceptions.Abort
MAX_MESSAGE = 500  # characters of an error line; the middle of a longer one is elided


def one_line(message: str) -> str:
    """An error message as one line of bounded length: a 9 MB architecture string given by
    mistake is not echoed back whole."""
    text = " ".join(str(message).split())
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE - 120]} [... {len(text) - MAX_MESSAGE + 20:,} characters ...] {text[-100:]}"


class OneLineErrors(TyperGroup):
    """The command line's own errors (unknown flag, a value of the wrong type, a missing
    argument) as one ``error:`` line and exit code 2, like the library's, instead of click's
    usage box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            typer.echo(f"error: {one_line(e.format_message())}{where}", err=True)
            sys.exit(2)
        except click.exceptions.ClickException as e:
            typer.echo(f"error: {one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except Abort:
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="gtn-nas", cls=OneLineErrors, no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="Generative Teaching Networks for neural architecture search (Such et al. 2019).")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Json = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (implies --quiet).")]
DATA_DIR_OPTION = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Folder with the raw dataset files (or a tfds data dir). Default: "
    "$GTN_NAS_DATA_DIR, else ../shared/data beside this repository.")]


def _run(fn: Callable[[], Any], json_mode: bool) -> None:
    """Runs a library call; turns user errors into one line and an exit code."""
    try:
        result = fn()
    except GtnError as e:
        first, _, rest = str(e).partition("\n")
        typer.echo(f"error: {one_line(first)}", err=True)
        if rest:  # a result that no file could hold (files.save_result): on stdout, not lost
            typer.echo(rest)
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; state saved, run the same command again to resume", err=True)
        raise typer.Exit(130)
    except OSError as e:  # the environment: a full disk, a folder removed under a run
        where = f"{e.filename}: " if e.filename else ""
        typer.echo(f"error: {one_line(where + (e.strerror or str(e)))}", err=True)
        raise typer.Exit(2)
    except Exception as e:  # noqa: BLE001 - a bug: one line for the user, the trace in a file
        if os.environ.get("GTN_NAS_TRACEBACK"):
            raise
        typer.echo(f"error: {one_line(f'unexpected {type(e).__name__}: {e}')} (a bug in "
                   f"gtn-nas; {_save_traceback()})", err=True)
        raise typer.Exit(1)
    if json_mode and result is not None:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=float))


def _save_traceback() -> str:
    """Writes the current exception's traceback to a file for a bug report; says where."""
    import tempfile
    import time
    import traceback

    path = os.path.join(tempfile.gettempdir(),
                        f"gtn-nas-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")
    try:
        with open(path, "w") as f:
            f.write(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
    except OSError:
        return "set GTN_NAS_TRACEBACK=1 to see the traceback"
    return f"the traceback is in {path}; GTN_NAS_TRACEBACK=1 prints it"


def _reporter(quiet: bool, json_mode: bool):
    from gtn_nas.io.ui import Reporter

    return Reporter(quiet=quiet, json_mode=json_mode)


# ---------------------------------------------------------------------------------------------
# Options generated from a config dataclass


def _default_note(cls, f: dataclasses.Field) -> str:
    """' (default: X)', or the value of each preset where they differ."""
    from gtn_nas.config import PRESET_VALUES, PRESETS

    if cls.COMMAND not in PRESET_VALUES:
        return "" if f.default in (None, (), "") else f" (default: {_show(f.default)})"
    per = {p: preset_values(cls, p).get(f.name, f.default) for p in PRESETS}
    if len(set(map(repr, per.values()))) == 1:
        return "" if f.default in (None, (), "") else f" (default: {_show(f.default)})"
    return " (" + ", ".join(f"{p} preset: {_show(v)}" for p, v in per.items()) + ")"


def _show(v) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return "none" if v is None else str(v)


def _base_type(hint) -> type:
    """The scalar type of a field annotation (``int | None`` -> int, ``tuple[float, ...]`` -> float)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0]
    if args:
        return _base_type(args[0])
    return hint


def _field_parameter(cls, f: dataclasses.Field, hint) -> inspect.Parameter:
    meta = f.metadata
    name = f.name
    typ = _base_type(hint)
    choices = meta.get("choices")
    help_ = meta.get("help", "") + _default_note(cls, f)
    metavar = f"[{'|'.join(choices.__members__)}]" if choices is not None else None
    if meta.get("argument"):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
            str, typer.Argument(help=meta.get("help", ""), show_default=False)])
    flags = meta.get("flags") or (f"--{name.replace('_', '-')}",)
    listing = meta.get("listing")
    if listing == "repeat":
        annotation = Optional[list[str]]
    elif listing == "csv" or choices is not None:
        annotation = Optional[str]  # validated by the config: one `error:` line, not click's usage
    else:
        annotation = Optional[typ]
    option = typer.Option(*flags, help=help_, metavar=metavar, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[annotation, option])


def _field_value(f: dataclasses.Field, hint, value):
    """A parsed option as the config field's value (None: not given)."""
    if value is None or f.metadata.get("listing") is None:
        return value
    if f.metadata["listing"] == "repeat":
        return tuple(value)
    typ = _base_type(hint)
    flag = (f.metadata.get("flags") or (f"--{f.name.replace('_', '-')}",))[0]
    try:
        return tuple(typ(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated {typ.__name__} values, got {value!r}") from None


def config_command(name: str, cls, extra: dict[str, Any] | None = None, exclude=()):
    """Registers ``name`` with one option per field of ``cls`` (plus ``extra`` parameters) and
    ``--quiet``/``--json``; the decorated ``run(cfg_values, extras, reporter)`` does the work."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in exclude]
    params = [_field_parameter(cls, f, hints[f.name]) for f in fields]
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # arguments first
    extra = dict(extra or {})
    for key, annotation in extra.items():
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=annotation[1],
                                        annotation=annotation[0]))
    params += [inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Quiet),
               inspect.Parameter("json_", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Json)]

    def decorate(run):
        def command(**kwargs):
            quiet, json_ = kwargs.pop("quiet"), kwargs.pop("json_")
            extras = {k: kwargs.pop(k) for k in extra}

            def go():
                given = {f.name: _field_value(f, hints[f.name], kwargs.get(f.name)) for f in fields}
                return run({k: v for k, v in given.items() if v is not None}, extras,
                           _reporter(quiet, json_))

            _run(go, json_)

        command.__signature__ = inspect.Signature(params)
        command.__doc__ = run.__doc__
        command.__name__ = run.__name__
        app.command(name)(command)
        return run

    return decorate


# ---------------------------------------------------------------------------------------------
# Commands


@config_command("meta-train", MetaTrainConfig)
def meta_train_cmd(given: dict, extras: dict, rep):
    """Meta-train a GTN (checkpointed; re-run the same command to resume)."""
    from gtn_nas.commands import meta_train as lib

    cfg = build_config(MetaTrainConfig, given.pop("preset", None), given)
    summary = lib.meta_train(cfg, rep)
    if not summary.get("runtime", {}).get("process_index", 0) == 0:
        return None  # other processes of a multi-process run stay silent
    rep.summary("meta-train summary", {k: v for k, v in summary.items()
                                       if k not in ("inner_lr", "inner_momentum")})
    return summary


@config_command("evaluate", EvaluateConfig)
def evaluate_cmd(given: dict, extras: dict, rep):
    """Fresh learners trained T steps on GTN data vs on real data with tuned lr/momentum."""
    from gtn_nas.commands import evaluate as lib

    return lib.evaluate(build_config(EvaluateConfig, None, given), rep)


@app.command("datasets")
def datasets_cmd(data_dir: DATA_DIR_OPTION = None, json_: Json = False) -> None:
    """What data sets are available locally, and how to add more."""
    def go():
        from gtn_nas.io.data import describe_sources

        rows = describe_sources(data_dir)
        _reporter(False, json_).table("datasets", rows)
        return rows

    _run(go, json_)


@config_command("search", SearchConfig)
def search_cmd(given: dict, extras: dict, rep):
    """Architecture search: random, evolution, local or a multi-fidelity cascade, scored by a GTN
    and other proxies (resumable: re-run the same command)."""
    from gtn_nas.commands import search as lib

    return lib.search(build_config(SearchConfig, given.pop("preset", None), given), rep)


@config_command("rank", RankConfig)
def rank_cmd(given: dict, extras: dict, rep):
    """Rank correlation of a search's proxies against ground truth, with scatter plots."""
    from gtn_nas.commands import rank as lib

    return lib.rank(build_config(RankConfig, None, given), rep)


EvalOnly = (Annotated[bool, typer.Option(
    "--eval-only", help="Reload the trained model in --out and report validation/test accuracy.")],
    False)


@config_command("retrain", RetrainConfig, extra={"eval_only": EvalOnly})
def retrain_cmd(given: dict, extras: dict, rep):
    """Train searched architectures on real data to the end (checkpointed every epoch; re-run to resume)."""
    from gtn_nas.commands import retrain as lib

    if extras["eval_only"]:
        return lib.evaluate_runs(given.get("out", RetrainConfig.out), data_dir=given.get("data_dir"),
                                 dataset=given.get("dataset"), reporter=rep)
    if not given.get("arch"):
        raise lib.ArchitectureError("--arch is required: a genotype string, a top/NN.json "
                                    "file, or a search directory with --top K")
    return lib.retrain(build_config(RetrainConfig, given.pop("preset", None), given), rep)


@app.command("show")
def show_cmd(
    run_dir: Annotated[str, typer.Argument(help="The --out directory of meta-train, search or retrain.")],
    quiet: Quiet = False,
    json_: Json = False,
) -> None:
    """Draw a run's PNGs (training curves, GTN vs real, proxy scatter plots) into RUN_DIR/plots."""
    def go():
        from gtn_nas.commands.show import show

        rep = _reporter(quiet, json_)
        result = show(run_dir)
        rep.summary(f"{result['kind']} plots", {"run_dir": result["run_dir"],
                                                 "plots": "\n".join(result["plots"]) or "none"})
        return result

    _run(go, json_)


def main() -> None:
    from gtn_nas import enable_compilation_cache
    from gtn_nas.io.hostmem import reuse_freed_memory

    from gtn_nas.io.signals import stop_on_signals

    stop_on_signals()  # schedulers, `kill` and Ray stop with SIGTERM: the same clean stop as Ctrl-C
    reuse_freed_memory()  # before JAX starts its threads
    enable_compilation_cache()
    app()


if __name__ == "__main__":
    sys.exit(main())
