"""Device suite: every figure a short GPU session should bring back, most valuable first, in a
wall-time budget.

    python benchmarks/device_suite.py --data-dir device_data --budget 480 --out runs/device-suite
    python benchmarks/device_suite.py --smoke --out /tmp/suite     # all of it on CPU, tiny sizes
    python benchmarks/device_suite.py --report runs/device-suite --record   # table -> RESULTS.md

Stages, in order of value; each gets its share of the time still left (so what an earlier stage
did not use goes to the later ones):

1. ``teach``: `gtn-nas meta-train --preset paper` on MNIST (base_fc, conv generator, T=32,
   B=128, 2,000 outer steps or as many as fit, via ``--time-budget``), then `gtn-nas evaluate`
   (5 new learner seeds, GTN vs tuned real data, accuracy after 1, 2, 4, ... inner steps);
2. ``conv``: issue #21's `cpu-conv` preset (base_fc width 16, B=64) on MNIST for
   ``--conv-iterations`` meta-steps (2,800: 4x the preset's), then `gtn-nas evaluate`: does the
   conv GTN's validation curve, still rising at the 700 steps 2 CPU cores afford, reach 97 %?
3. ``speed``: ``benchmarks/speed.py`` for the cpu and paper presets, each in its own process
   (seconds per meta-step, compile time, FLOP/s and its share of the float32 matmul peak timed in
   the same process, peak device memory), and the search's architectures per minute with the
   stage-1 GTN, compile time apart;
4. ``proxy``: a CIFAR-10 GTN (the paper preset's CIFAR-10 settings at ``--proxy-inner-steps``),
   then ``benchmarks/proxy.py --truth nb201`` at the benchmark's C=16, N=5: the GTN vs real data
   at T and 9T steps vs params, flops and the zero-cost proxies on the same architectures,
   Spearman against the NAS-Bench-201 table;
5. ``scaling``: ``benchmarks/scaling.py``, sharded meta-training over the devices present.

Every stage runs in child processes: this one never starts JAX, so each child has the whole
device. OUT/suite.json and OUT/suite.md are rewritten after every stage, so a run cut short keeps
what it finished; the same command again skips finished stages and continues the others
(meta-training and the proxy searches resume from what they saved). Data are read from
``--data-dir`` only (``mnist/``, ``cifar10/``, ``nb201/`` as in ../shared/data): nothing is
fetched, and the children cannot import tensorflow-datasets (a blocking stub is first on their
path).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import append_row, command_line  # noqa: E402  (no JAX in this process)
from gtn_nas.io.files import write_atomic, write_json  # noqa: E402  (stdlib only)

STAGES = ("teach", "conv", "speed", "proxy", "scaling")
SHARE = {"teach": 0.35, "conv": 0.20, "speed": 0.15, "proxy": 0.20, "scaling": 0.10}
RESULTS_SECTION = "Device suite (benchmarks/device_suite.py)"
PROXY_ORDER = ("gtn", "real", "real-long", "params", "flops", "naswot", "synflow", "jacov", "snip",
               "grad_norm")
PAPER_MNIST = 0.989  # the paper's MNIST test accuracy after 32 inner steps (issue #24's target)
GOAL_MNIST = 0.992
CONV_MNIST = 0.97  # issue #21's bar for the cpu-conv preset

# Tiny sizes of --smoke: every stage's code path on CPU in a few minutes.
SMOKE_TEACH = ["--learner-width", "4", "-T", "2", "-B", "8", "--iterations", "3",
               "--meta-batch-size", "32", "--noise-dim", "8", "--eval-every", "0",
               "--eval-subset", "200", "--log-every", "1"]
SMOKE_EVAL = ["--num-seeds", "2", "--real-lrs", "0.1", "--real-momentums", "0.5"]


def allocate(left: float, todo: list[str]) -> float:
    """Seconds for ``todo[0]``: its share of ``left`` among the stages still to run."""
    return max(0.0, left) * SHARE[todo[0]] / sum(SHARE[s] for s in todo)


class Suite:
    """The state of one suite directory (``suite.json``) and the children it runs."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.path = self.out / "suite.json"
        if self.path.exists():
            self.state = _read(self.path)
            if not isinstance(self.state, dict) or not isinstance(self.state.get("stages"), dict):
                raise SystemExit(f"unreadable {self.path} (a suite's record, not JSON of one); "
                                 "use another --out or remove it")
        else:
            self.state = {"created": dt.datetime.now().isoformat(timespec="seconds"),
                          "smoke": args.smoke, "calls": [], "stages": {}}
        if self.state.get("smoke") != args.smoke:
            raise SystemExit(f"{self.out} holds a {'smoke' if self.state.get('smoke') else 'full'} "
                             "suite; use another --out")
        self.deadline = time.time() + args.budget
        self.children = 0

    def left(self) -> float:
        return self.deadline - time.time()

    def stage(self, name: str) -> dict:
        return self.state["stages"].setdefault(name, {"status": "pending", "wall_s": 0.0})

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.state)
        write_atomic(self.out / "suite.md", render(self.state) + "\n")

    @functools.cached_property
    def env(self) -> dict:
        """The children's environment: this repository importable without installing it, no
        download, tensorflow-datasets blocked, XLA's compilation cache inside the suite folder."""
        stub = self.out / ".no-tfds" / "tensorflow_datasets"
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "__init__.py").write_text(
            'raise ImportError("benchmarks/device_suite.py: tensorflow-datasets is not used on '
            'this path (data come from --data-dir)")\n')
        env = dict(os.environ, GTN_NAS_NO_DOWNLOAD="1")
        env["PYTHONPATH"] = os.pathsep.join([str(stub.parent), str(ROOT)]
                                            + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("GTN_NAS_XLA_CACHE", str(self.out / "xla-cache"))
        return env

    def run(self, stage: str, argv: list[str], timeout: float) -> dict:
        """Runs a child (its output in OUT/logs/) for at most ``timeout`` seconds (never past the
        suite's deadline); past it the child gets Ctrl-C (it saves its state), then a kill."""
        timeout = max(1.0, min(timeout, self.left()))
        self.children += 1
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        call = len(self.state["calls"])
        log = logs / f"{call:02d}-{self.children:02d}-{stage}.log"
        text = " ".join(shlex.quote(a) for a in argv)
        print(f"[{stage}] {text}  (up to {timeout:.0f} s; log {log})", flush=True)
        t0 = time.time()
        with open(log, "w") as f:
            f.write(f"$ {text}\n")
            f.flush()
            p = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            timed_out = False
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(p.pid, signal.SIGINT)
                try:
                    rc = p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    rc = p.wait()
        wall = time.time() - t0
        tail = log.read_text().strip().splitlines()[-1:] if rc else []
        print(f"[{stage}] exit {rc}{' (time limit)' if timed_out else ''} after {wall:.0f} s"
              + (f": {tail[0][:200]}" if tail else ""), flush=True)
        return {"rc": rc, "timed_out": timed_out, "wall_s": round(wall, 1), "log": str(log)}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _gtn_nas(command: str, args) -> list[str]:
    argv = _python("-m", "gtn_nas", command, "--quiet")
    return argv + (["--data-dir", args.data_dir] if args.data_dir else [])


def _meta_train(suite: Suite, stage: str, run_dir: Path, extra: list[str], budget: float,
                timeout: float) -> dict:
    """Meta-trains (or continues) ``run_dir`` for about ``budget`` seconds; its summary."""
    summary = _read(run_dir / "summary.json")
    if summary and summary["outer_steps"] >= summary.get("iterations", summary["outer_steps"]):
        return {"summary": summary, "child": None}
    argv = _gtn_nas("meta-train", suite.args) + ["--out", str(run_dir), "--time-budget",
                                                 f"{max(budget, 1.0):.0f}"] + extra
    child = suite.run(stage, argv, timeout)
    return {"summary": _read(run_dir / "summary.json") if child["rc"] == 0 else None,
            "child": child}


def teach(suite: Suite, alloc: float) -> dict:
    """Stage 1: the paper preset on MNIST, then evaluate."""
    extra = ["--preset", "paper", "--checkpoint-every", "50"]
    return _teach_run(suite, "teach", suite.out / "teach" / "paper-mnist", extra, alloc)


def conv(suite: Suite, alloc: float) -> dict:
    """Stage 2: issue #21's `cpu-conv` preset (the conv GTN that 2 CPU cores meta-train in 10-18
    minutes) for --conv-iterations meta-steps, 4x the preset's 700 by default: whether its
    validation curve, still rising at 700, goes on to the >= 97 % it misses there. No curve of
    inner steps: its time goes to meta-steps."""
    extra = ["--preset", "cpu-conv", "--checkpoint-every", "100"]
    if not suite.args.smoke:
        extra += ["--iterations", str(suite.args.conv_iterations)]
    return _teach_run(suite, "conv", suite.out / "conv" / "cpu-conv-mnist", extra, alloc,
                      curve=False, reserve_share=0.25)


def _val_curve(run_dir: Path) -> list[list[float]]:
    """[outer step, validation accuracy] at each periodic validation of ``run_dir``."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if "val_acc" in r:
            rows.append([r["step"], round(r["val_acc"], 4)])
    return rows


def _teach_run(suite: Suite, stage: str, run_dir: Path, extra: list[str], alloc: float,
               curve: bool = True, reserve_share: float = 0.4) -> dict:
    """Meta-trains ``run_dir`` in ``alloc`` seconds less evaluate's reserve (``reserve_share``
    of them, at least 75 s), then evaluates it (5 new learner seeds, GTN vs tuned real) and, if
    ``curve`` and time is left, its accuracy after 1, 2, 4, ... inner steps."""
    args, end = suite.args, time.time() + alloc
    reserve = 60.0 if args.smoke else max(75.0, reserve_share * alloc)  # for evaluate
    extra = extra + (SMOKE_TEACH if args.smoke else [])
    mt = _meta_train(suite, stage, run_dir, extra, alloc - reserve, alloc - 0.5 * reserve)
    result: dict = {"run": str(run_dir)}
    if mt["child"]:
        result["meta_train_child"] = mt["child"]
    s = mt["summary"]
    if not (run_dir / "best").exists() and not s:
        return dict(result, status="failed", note="meta-training saved no state (see its log)")
    # The headline first (two programs), then the accuracy-vs-steps curve (one more program per
    # length on each side) in what is left, so a slow compile costs the curve, not the headline.
    ev_argv = _gtn_nas("evaluate", args) + ["--gtn", str(run_dir)]
    ev_argv += SMOKE_EVAL if args.smoke else ["--num-seeds", "5"]
    child = suite.run(stage, ev_argv + ["--no-curve", "--out", str(run_dir / "evaluate.json")],
                      max(10.0, end - time.time()))
    ev = _read(run_dir / "evaluate.json") if child["rc"] == 0 else None
    s = s or _read(run_dir / "summary.json") or {}
    cfg = _read(run_dir / "config.json") or {}
    result["config"] = {k: cfg.get(k) for k in ("learner", "learner_width", "generator",
                                                "inner_steps", "batch_size")}
    result.update(evaluate_child=child, outer_steps=s.get("outer_steps"),
                  iterations=s.get("iterations"), meta_train_wall_s=s.get("wall_seconds"),
                  best_step=s.get("best_step"), spikes=s.get("meta_gradient_spikes"),
                  nonfinite=s.get("nonfinite_steps"), val_curve=_val_curve(run_dir))
    if ev is None:
        return dict(result, status="partial", note="evaluate did not finish (see its log)")
    result.update(gtn_test=ev["gtn"]["test"], real_test=ev["real"]["test"],
                  real_lr=ev["real"]["lr"], real_momentum=ev["real"]["momentum"],
                  gtn_outer_steps=ev["gtn_outer_steps"], num_seeds=ev["num_seeds"], curve=None)
    if curve and end - time.time() > 15:
        curve_path = run_dir / "evaluate-curve.json"
        result["curve_child"] = suite.run(stage, ev_argv + ["--curve", "--out", str(curve_path)],
                                          end - time.time())
        c = _read(curve_path) if result["curve_child"]["rc"] == 0 else None
        if c and c["gtn_outer_steps"] == ev["gtn_outer_steps"]:
            result["curve"] = c["curve"]
    complete = s.get("outer_steps") is not None and s["outer_steps"] >= s["iterations"]
    note = "" if complete else (f"{s.get('outer_steps')} of {s.get('iterations')} outer steps "
                                "fitted; the same command continues")
    return dict(result, status="done" if complete else "partial", note=note)


def speed(suite: Suite, alloc: float) -> dict:
    """Stage 3: meta-step speed of the cpu and paper presets, search speed with the stage-1 GTN."""
    args, end = suite.args, time.time() + alloc
    presets = ["tiny"] if args.smoke else ["cpu", "paper"]
    gtn = suite.out / "teach" / "paper-mnist"
    result: dict = {"presets": {}, "search": None}
    missing = []
    for i, preset in enumerate(presets):
        path = suite.out / "speed" / f"{preset}.json"
        last = i == len(presets) - 1
        if _read(path) is None:
            argv = _python("benchmarks/speed.py", "--presets", preset, "--no-record", "--out",
                           str(path), "--steps", "1" if args.smoke else "5",
                           "--warmup", "0" if args.smoke else "2")
            if args.data_dir:
                argv += ["--data-dir", args.data_dir]
            if last and (gtn / "best").exists():
                argv += ["--search-gtn", str(gtn), "--search-budgets", "2" if args.smoke else "20"]
                if args.smoke:
                    argv += ["--search-channels", "4"]
            share = (end - time.time()) / (len(presets) - i)
            result[f"{preset}_child"] = suite.run("speed", argv, share)
        r = _read(path)
        if r is None:
            missing.append(preset)
            continue
        result["machine"] = r["machine"]
        result["matmul_peak_gflops"] = r["matmul_peak_gflops"]
        (row,) = r["meta_step"].values()
        result["presets"][preset] = dict(row, matmul_peak_gflops=r["matmul_peak_gflops"])
        if r["search"]:
            result["search"] = r["search"][0]
    status = "failed" if len(missing) == len(presets) else "partial" if missing else "done"
    return dict(result, status=status, note=f"not measured: {', '.join(missing)}" if missing else "")


def proxy(suite: Suite, alloc: float) -> dict:
    """Stage 4: a CIFAR-10 GTN, then the proxy benchmark against the NAS-Bench-201 table."""
    args, end = suite.args, time.time() + alloc
    gtn, bench = suite.out / "proxy" / "gtn-cifar10", suite.out / "proxy" / "bench"
    result: dict = {"gtn_run": str(gtn)}
    if not bench.exists():  # the GTN is frozen once the benchmark has scored with it
        extra = (["--preset", "tiny", "--dataset", "cifar10", "--iterations", "2"] if args.smoke
                 else ["--preset", "paper", "--dataset", "cifar10", "-T",
                       str(args.proxy_inner_steps), "--checkpoint-every", "50"])
        mt = _meta_train(suite, "proxy", gtn, extra, 0.45 * alloc, 0.5 * alloc)
        if mt["child"]:
            result["meta_train_child"] = mt["child"]
    s = _read(gtn / "summary.json")
    if not (gtn / "checkpoints").exists():
        return dict(result, status="failed", note="the CIFAR-10 GTN saved no state (see its log)")
    if s:
        result.update(gtn_outer_steps=s["outer_steps"], gtn_iterations=s.get("iterations"),
                      gtn_best_val=s.get("best_validation_accuracy"))
    size = (["--channels", "4", "--cells", "1", "--archs", "2", "--chunk", "2",
             "--eval-subset", "200", "--long-factor", "2", "--zc-batch-size", "8"] if args.smoke
            else ["--channels", "16", "--cells", "5", "--archs", str(args.proxy_archs)])
    left = end - time.time()
    argv = _python("benchmarks/proxy.py", "--gtn", str(gtn), "--truth", "nb201", "--dataset",
                   "cifar10", "--zero-cost", "--gtn-bn-real", "--no-record", "--quiet", "--out",
                   str(bench),
                   "--time-budget", f"{max(1.0, 0.85 * left - 10):.0f}", *size)
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    result["child"] = suite.run("proxy", argv, left)
    r = _read(bench / "proxy.json") if result["child"]["rc"] == 0 else None
    if r is None:
        return dict(result, status="partial", note="no architecture was scored by every proxy "
                    "stage in time; the same command continues")
    keep = ("spearman", "kendall", "top10_overlap", "best_of_10", "best_of_100", "picked_truth",
            "best_truth", "n")
    order = [k for k in PROXY_ORDER if k in r["metrics"]]
    order += sorted(set(r["metrics"]) - set(order))  # the curve's stages, if any
    result.update(n=r["n"], archs=r["args"]["archs"], steps=r["steps"],
                  metrics={k: {f: r["metrics"][k].get(f) for f in keep} for k in order},
                  per_arch_s=r["per_arch_s"], figures=r["figures"])
    done = r["n"] >= r["args"]["archs"]
    return dict(result, status="done" if done else "partial",
                note="" if done else f"{r['n']} of {r['args']['archs']} architectures; the same "
                "command continues")


def scaling(suite: Suite, alloc: float) -> dict:
    """Stage 5: sharded meta-training over the devices present (on CPU, forced host devices)."""
    args = suite.args
    count = suite.state["machine"]["device_count"]
    devices = "1,2" if args.smoke else ",".join(dict.fromkeys(["1", str(count)]))
    path = suite.out / "scaling" / "scaling.json"
    argv = _python("benchmarks/scaling.py", "--devices", devices, "--no-record", "--out", str(path),
                   *(["--preset", "tiny", "--learners", "2", "--steps", "1"] if args.smoke
                     else ["--preset", "paper", "--learners", str(count * -(-4 // count)),
                           "--steps", "3"]))
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    child = suite.run("scaling", argv, alloc)
    r = _read(path) if child["rc"] == 0 else None
    if r is None:
        return {"status": "failed", "child": child, "note": "see its log"}
    return {"status": "done", "child": child, "preset": r["preset"], "rows": r["meta_train"]}


RUNNERS = {"teach": teach, "conv": conv, "speed": speed, "proxy": proxy, "scaling": scaling}


def probe(suite: Suite) -> dict:
    """The machine, described by a child (this process never starts JAX)."""
    code = ("import json, jax; from benchmarks.common import machine; m = machine(); "
            "m.update(device_count=jax.device_count(), platform=jax.default_backend()); "
            "print(json.dumps(m))")
    out = subprocess.run(_python("-c", code), cwd=ROOT, env=suite.env, capture_output=True,
                         text=True, timeout=max(30.0, suite.left()))
    if out.returncode:
        raise SystemExit(f"JAX does not start here: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_suite(args) -> dict:
    suite = Suite(args)
    started = time.time()
    m = probe(suite)
    suite.state["machine"] = m
    call = {"started": dt.datetime.now().isoformat(timespec="seconds"), "budget_s": args.budget,
            "command": command_line(), "device": m["device"], "ran": []}
    suite.state["calls"].append(call)
    print(f"machine: {m['cpu']} ({m['cores']} cores), {m['device']} x{m['device_count']}, "
          f"jax {m['jax']}; budget {args.budget:.0f} s", flush=True)
    if m["platform"] == "cpu" and not args.smoke:
        print("warning: no accelerator: these are CPU figures, and the full sizes take hours "
              "here (--smoke checks the suite in minutes)", flush=True)
    todo = [s for s in args.stages if suite.stage(s)["status"] != "done"]
    for name in [s for s in args.stages if s not in todo]:
        print(f"[{name}] done in an earlier call; skipped", flush=True)
    suite.save()
    while todo:
        name = todo[0]
        alloc = allocate(suite.left(), todo)
        entry = suite.stage(name)
        if alloc < 5:
            print(f"[{name}] no time left in the budget; the same command continues", flush=True)
            break
        t0 = time.time()
        entry.update(status="running")
        suite.save()
        try:
            result = RUNNERS[name](suite, alloc)
        except Exception as e:  # one stage's failure never loses the others' results
            result = {"status": "failed", "note": f"{type(e).__name__}: {e}"}
        wall = time.time() - t0
        entry.update(result, wall_s=round(entry.get("wall_s", 0.0) + wall, 1),
                     allocated_s=round(alloc, 1))
        call["ran"].append({"stage": name, "status": result["status"], "wall_s": round(wall, 1)})
        print(f"[{name}] {result['status']} in {wall:.0f} s (of {alloc:.0f} s)"
              + (f": {result['note']}" if result.get("note") else ""), flush=True)
        suite.save()
        todo.pop(0)
    call["wall_s"] = round(time.time() - started, 1)
    suite.save()
    print(f"wrote {suite.path} and {suite.out / 'suite.md'}")
    return suite.state


# ---------------------------------------------------------------------------------------------
# The Markdown report (from suite.json alone: --report re-renders a fetched suite folder)


def _pct(s: dict | None) -> str:
    return "n/a" if not s else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _teach_table(t: dict, title: str, bars: dict[str, float]) -> list[str]:
    """A teaching stage's rows: the evaluated GTN against tuned real data, its accuracy after
    1, 2, 4, ... inner steps and its validation accuracy along the meta-steps, where present."""
    if not t.get("gtn_test"):
        return []
    gap = 100 * (t["gtn_test"]["mean"] - t["real_test"]["mean"])
    target = " / ".join("met" if t["gtn_test"]["mean"] >= bar else "not met" for bar in bars.values())
    c = t.get("config") or {}
    width = f" width {c['learner_width']}" if c.get("learner_width") else ""
    lines = ["", f"**{title}** ({c.get('learner')}{width}, {c.get('generator')} generator, "
             f"T={c.get('inner_steps')}, B={c.get('batch_size')}; evaluate: {t['num_seeds']} new "
             "learner seeds per side, test set)", "",
             "| outer steps | meta-train wall | evaluated step | GTN test % | tuned real test % | gap "
             f"| target {' / '.join(bars)} |", "|---|---|---|---|---|---|---|",
             f"| {t['outer_steps']} of {t['iterations']} | {_f(t['meta_train_wall_s'], '.0f')} s "
             f"| {t['gtn_outer_steps']} | {_pct(t['gtn_test'])} | {_pct(t['real_test'])} (lr "
             f"{t['real_lr']}, mom {t['real_momentum']}) | {gap:+.2f} | {target} |"]
    c = t.get("curve")
    if c:
        lines += ["", "| inner steps | " + " | ".join(map(str, c["steps"])) + " |",
                  "|---" * (len(c["steps"]) + 1) + "|",
                  "| GTN | " + " | ".join(_pct(r) for r in c["gtn_test"]) + " |",
                  "| real | " + " | ".join(_pct(r) for r in c["real_test"]) + " |"]
    v = t.get("val_curve") or []
    if v:
        # about eight points: the curve's shape, its end and its best
        keep = sorted({*range(0, len(v), max(1, len(v) // 8)), len(v) - 1,
                       max(range(len(v)), key=lambda i: v[i][1])})
        lines += ["", "| meta-step | " + " | ".join(str(v[i][0]) for i in keep) + " |",
                  "|---" * (len(keep) + 1) + "|",
                  "| validation % (1 learner) | " + " | ".join(f"{100 * v[i][1]:.2f}" for i in keep)
                  + " |"]
    return lines


def render(state: dict) -> str:
    m = state.get("machine", {})
    st = state["stages"]
    lines = [f"Machine: {m.get('cpu', '?')} ({m.get('cores', '?')} cores), {m.get('device', '?')} "
             f"x{m.get('device_count', '?')}, jax {m.get('jax', '?')}"
             + (" (**smoke sizes**: checks the suite, not figures)" if state.get("smoke") else "")
             + f". {len(state['calls'])} call(s) of the suite, budgets "
             + ", ".join(f"{c['budget_s']:.0f} s" for c in state["calls"]) + ".", "",
             "| stage | status | wall (all calls) | note |", "|---|---|---|---|"]
    for name in STAGES:
        if name in st:
            e = st[name]
            lines.append(f"| {name} | {e['status']} | {e.get('wall_s', 0):.0f} s | {e.get('note', '')} |")
    lines += _teach_table(st.get("teach", {}), "1. `paper` preset, MNIST",
                          {"98.9 %": PAPER_MNIST, "99.2 %": GOAL_MNIST})
    lines += _teach_table(st.get("conv", {}), "2. `cpu-conv` preset, MNIST, longer",
                          {"97 %": CONV_MNIST})
    sp = st.get("speed", {})
    if sp.get("presets"):
        lines += ["", f"**3. Speed** (float32 matmul peak at JAX's default precision "
                  f"{sp['matmul_peak_gflops']:.0f} GFLOP/s, measured in each process)", "",
                  "| preset | s / meta-step | compile | GFLOP / step | GFLOP/s | MFU (% of peak) "
                  "| peak memory |",
                  "|---|---|---|---|---|---|---|"]
        for preset, r in sp["presets"].items():
            lines.append(f"| {preset} | {1 / r['steps_per_s']:.3f} | {r['compile_s']:.1f} s | "
                         f"{r['flops_per_step'] / 1e9:.1f} | {r['gflops_per_s']:.0f} | "
                         f"{100 * r['gflops_per_s'] / r['matmul_peak_gflops']:.1f}% | "
                         f"{r['peak_memory_mb']:.0f} MB |")
        s = sp.get("search")
        if s:
            lines += ["", f"Search with the stage-1 GTN (gtn proxy, program {s['program']}): "
                      f"{s['archs_per_min']} architectures/min over {s['budget']}, compile "
                      f"{s['compile_s_total']:.0f} s of {s['wall_s']:.0f} s, training "
                      f"{s['train_s_mean']:.2f} s per architecture."]
    px = st.get("proxy", {})
    if px.get("metrics"):
        lines += ["", f"**4. Proxies on NAS-Bench-201 / CIFAR-10** ({px['n']} of {px['archs']} "
                  f"architectures, GTN: {px.get('gtn_outer_steps')} outer steps, T={px['steps']}; "
                  "truth: the table's 200-epoch test accuracy)", "",
                  "| proxy | Spearman | Kendall | top-10% overlap | best of 10 | best of 100 |",
                  "|---|---|---|---|---|---|"]
        for k, r in px["metrics"].items():
            b10, b100 = r.get("best_of_10"), r.get("best_of_100")
            lines.append(f"| {k} | {_f(r['spearman'])} | {_f(r['kendall'])} | "
                         f"{_f(r['top10_overlap'], '.2f')} | "
                         + (f"{b10['mean']:.2f} ± {b10['std']:.2f}" if b10 else "n/a") + " | "
                         + (f"{b100['mean']:.2f} ± {b100['std']:.2f}" if b100 else "n/a") + " |")
    sc = st.get("scaling", {})
    if sc.get("rows"):
        lines += ["", f"**5. Sharded meta-training** (`{sc['preset']}` preset)", "",
                  "| devices | learners | outer steps/s | learners/s | compile + first step |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['devices']} | {r['learners']} | {r['steps_per_s']:.3f} | "
                  f"{r['learners_per_s']:.2f} | {r['compile_and_first_s']:.1f} s |" for r in sc["rows"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with mnist/, cifar10/, nb201/ "
                    "(default: $GTN_NAS_DATA_DIR, else ../shared/data beside this repository)")
    ap.add_argument("--budget", type=float, default=None,
                    help="wall seconds for this call (default 480; --smoke: 900)")
    ap.add_argument("--out", default="runs/device-suite")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma list, run in this order")
    ap.add_argument("--conv-iterations", type=int, default=2800,
                    help="meta-steps of the cpu-conv GTN (stage 2; the preset's are 700)")
    ap.add_argument("--proxy-archs", type=int, default=100, help="NB201 architectures (stage 3)")
    ap.add_argument("--proxy-inner-steps", type=int, default=32,
                    help="T of the CIFAR-10 GTN (stage 3; the paper used 128, which a few "
                         "minutes cannot meta-train)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any machine: checks that "
                    "every stage works before GPU time is spent")
    ap.add_argument("--report", default=None, metavar="DIR",
                    help="run nothing: re-render DIR/suite.md from DIR/suite.json")
    ap.add_argument("--record", action="store_true", help="append the report to RESULTS.md")
    args = ap.parse_args()
    if args.report:
        state = _read(Path(args.report) / "suite.json")
        if state is None:
            raise SystemExit(f"no readable suite.json in {args.report}")
        (Path(args.report) / "suite.md").write_text(render(state) + "\n")
    else:
        # The children run in the repository root: paths given relative to here are made absolute.
        args.out = str(Path(args.out).resolve())
        if args.data_dir:
            args.data_dir = str(Path(args.data_dir).resolve())
        args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = set(args.stages) - set(STAGES)
        if unknown:
            raise SystemExit(f"unknown stage(s) {', '.join(sorted(unknown))}; known: {', '.join(STAGES)}")
        if args.budget is None:
            args.budget = 900.0 if args.smoke else 480.0
        if args.budget <= 0:
            raise SystemExit(f"--budget must be > 0 seconds, got {args.budget:g}")
        state = run_suite(args)
    text = render(state)
    print(text)
    if args.record:
        if state.get("smoke"):
            raise SystemExit("a smoke suite's figures are not results: not recorded")
        commands = "; ".join(f"`{c['command']}`" for c in state["calls"])
        append_row(RESULTS_SECTION, f"Command(s): {commands}\n\n{text}",
                   heading=f"{state['machine']['device']} (GPU)" if state["machine"]["platform"]
                   == "gpu" else state["machine"]["device"])


if __name__ == "__main__":
    main()
