"""What every benchmark shares: machine description, JSON output, the RESULTS.md row."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> dict:
    import jax

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}", "jax": jax.__version__,
            "python": platform.python_version()}


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): the kernel's high-water mark of its address
    space (VmHWM), not ``getrusage``'s ru_maxrss, which Linux carries across fork and exec: a
    child started by a 5 GB parent reports at least 5 GB there, whatever it used itself."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def isa_env(isa: str) -> dict:
    """The environment of a child process limited to ``isa`` (``default``: XLA's own choice)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_max_isa")]
    if isa != "default":
        flags.append(f"--xla_cpu_max_isa={isa}")
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def worst_fall(run_dir: str | Path, after: int = 200) -> float:
    """The largest fall of a run's validation readings below the best reading before them, over
    the readings after outer step ``after`` (the issue's robustness criterion)."""
    from gtn_nas.io.runs import read_jsonl

    top, worst = None, 0.0
    for r in read_jsonl(Path(run_dir) / "metrics.jsonl"):
        if "val_acc" not in r:
            continue
        if top is not None and r["step"] > after:
            worst = max(worst, top - r["val_acc"])
        top = r["val_acc"] if top is None else max(top, r["val_acc"])
    return worst


def describe(m: dict) -> str:
    return f"{m['cpu']} ({m['cores']} cores), {m['device']}, jax {m['jax']}"


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def save(result: dict, path: str | Path) -> None:
    path = Path(path)
    if path.is_dir():  # --out given as a folder: the script's JSON goes inside it
        path = path / f"{Path(sys.argv[0]).stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    print(f"saved {path}")


def append_row(section: str, text: str, heading: str | None = None) -> None:
    """Appends a dated entry under ``## section`` of RESULTS.md (created if missing), headed by
    ``heading`` or else this process's command line."""
    body = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    heading = heading or f"`{command_line()}`"
    entry = f"\n### {dt.date.today().isoformat()}: {heading}\n\n{text.strip()}\n"
    header = f"\n## {section}\n"
    if header not in body:
        body = body.rstrip() + "\n" + header
    start = body.index(header) + len(header)
    nxt = body.find("\n## ", start)
    end = len(body) if nxt < 0 else nxt
    body = body[:end].rstrip() + "\n" + entry + body[end:]
    RESULTS_MD.write_text(body)
    print(f"appended to {RESULTS_MD}")


def finish(result: dict, lines: list[str], out: str | Path, section: str, record: bool) -> None:
    """Prints the result table, saves the JSON and, unless told not to, records it in RESULTS.md."""
    print("\n".join(lines))
    save(result, out)
    if record:
        append_row(section, "\n".join(lines))


def compile_meta_step(cfg, data, donate: bool = False):
    """The meta-step of ``cfg`` on ``data``, compiled: (compiled, state, source, arch, images,
    labels, compile seconds). ``arch``: the source's draw for a fixed key (None for a fixed
    learner). The benchmarks that time or profile one meta-step build it here."""
    import jax
    import jax.numpy as jnp

    from gtn_nas.meta import exact_meta_step
    from gtn_nas.meta.gtn import build_learner_source, build_teacher
    from gtn_nas.meta.outer import init_meta_state

    shape, classes = data.image_shape, data.num_classes
    teacher = build_teacher(cfg, shape, classes)
    source = build_learner_source(cfg, shape, classes)
    images, labels = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    key = jax.random.PRNGKey(0)
    state = init_meta_state(cfg, teacher, key)
    arch = source.sample(jax.random.PRNGKey(7))
    step = jax.jit(exact_meta_step(cfg, teacher, source, data.mean, data.std),
                   donate_argnums=0 if donate else ())
    t0 = time.perf_counter()
    compiled = step.lower(state, arch, key, images, labels).compile()
    return compiled, state, source, arch, images, labels, time.perf_counter() - t0


def add_meta_step_args(p) -> None:
    """The options that pick the meta-step a meta-step benchmark builds."""
    p.add_argument("--preset", default="cpu")
    p.add_argument("--learner", default="base_fc")
    p.add_argument("--learner-width", type=int, default=16)
    p.add_argument("--remat", default=None, help="none | step | nested instead of the preset's")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="another meta-train config value, e.g. inner_steps=8 (repeat)")


def meta_step_setup(args):
    """(config, data set) of the options of ``add_meta_step_args`` (``--set`` values included)."""
    import dataclasses

    from gtn_nas.config import MetaTrainConfig, build_config
    from gtn_nas.io.data import load_dataset

    values = dict(learner=args.learner, learner_width=args.learner_width)
    if args.remat:
        values["remat"] = args.remat
    types = {f.name: str(f.type) for f in dataclasses.fields(MetaTrainConfig)}
    for item in args.set:
        name, _, value = item.partition("=")
        kind = types.get(name, "str")
        values[name] = (value.lower() in ("1", "true") if kind.startswith("bool") else
                        int(value) if kind.startswith("int") else
                        float(value) if kind.startswith("float") else value)
    cfg = build_config(MetaTrainConfig, args.preset, values)
    return cfg, load_dataset(cfg.dataset, args.data_dir, cfg.split_seed)
