"""Scoring one architecture of a search by each proxy.

Proxies:
- ``gtn``: ``steps`` inner steps (default the GTN's T) on the GTN's curriculum with its learned
  lr/momentum schedule, then accuracy on a fixed validation subset (``eval_subset`` images);
- ``real``: ``real_steps`` SGD steps (default the same number) on real training batches with a
  fixed lr/momentum, the same inner loop and the same validation subset (the paper's baseline);
- ``params``, ``flops``: the parameter count and FLOPs (the trivial baselines every proxy should
  beat);
- the zero-cost proxies of the registry ``search.zero_cost.ZERO_COST`` (synflow, naswot, jacov,
  snip, grad_norm, meco, zico): fixed training images, no training, on the benchmark's own
  network;
- ``vote``: a log-rank aggregate of other proxies' columns, counted when the leaderboard is
  written (``search.vote``), never scored here.

Two ways to run a trainable proxy, chosen once per search:
- *stepped* (CPU, and ``exact``/``composed`` anywhere): the learner's inner step and eval chunk
  are programs of their own driven by a Python loop (``core.training.SteppedLearner``: XLA's CPU
  backend runs convolutions ~10x slower inside ``lax.scan``), fed by one compiled program per
  proxy that draws the batches and schedule. The learner is the genotype's own network
  (``exact``: compiled per genotype), the same network run as per-op programs shared by every
  NB201 genotype (``composed``: ``search_spaces.nb201_composed``, nothing compiled per genotype
  once the ops are), or the NB201 weight-sharing supernet with the op indices as an argument
  (``shared``: one compilation for the whole search);
- *whole* (``shared`` on accelerators): the whole proxy, inner loop as a scan, one program.
Every program is an entry of ``programs.PROGRAMS`` under a complete key. Everything large
(meta-parameters, validation subset, training images) is an *argument*, never a captured
constant: compiling stays cheap and XLA's persistent cache serves a resumed search.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gtn_nas.config import ZERO_COST_PROXIES, SearchConfig
from gtn_nas.core.cost import count_flops, count_params
from gtn_nas.core.training import (SteppedLearner, lr_schedule, real_batches, recalibrate_bn,
                                   score, train_on_real, train_on_teacher)
from gtn_nas.io.data import subset
from gtn_nas.search.programs import PROGRAMS, ProxySetup, signature
from gtn_nas.core.images import normalize
from gtn_nas.search.indices import bn_batch_key, zero_cost_batch_key
from gtn_nas.search.store import COLUMN_PROXIES, Row


class Scorer:
    """Compiles and runs the proxies of one search: ``score(index, genotype, proxies, key)``.
    ``teacher``/``meta``/``steps`` are None in a search without the ``gtn`` proxy."""

    def __init__(self, cfg: SearchConfig, space, teacher, meta, data, sizes: dict[str, Any],
                 steps: int | None, real_steps: int, real_batch: int, program: str):
        self.space, self.program = space, program
        self.zero_cost = None
        if any(p in ZERO_COST_PROXIES for p in cfg.proxies):
            from gtn_nas.search.zero_cost import ZeroCostScorer

            self.zero_cost = ZeroCostScorer(
                int(sizes["channels"]), int(sizes["cells"]), data.num_classes,
                tuple(sizes["input_shape"]), data.train.images, data.train.labels, data.mean,
                data.std, cfg.zc_batch_size, zero_cost_batch_key(cfg.seed))
        v_img, v_lab = subset(data.validation.images, data.validation.labels, cfg.eval_subset)
        self.args = {  # the compiled programs' array arguments
            "meta": meta,
            "val": (jnp.asarray(v_img), jnp.asarray(v_lab)),  # [V, H, W, C] uint8, [V]
            "train": (jnp.asarray(data.train.images), jnp.asarray(data.train.labels)),
            "opt": (jnp.float32(cfg.real_lr), jnp.float32(cfg.real_momentum)),
        }
        gtn_bn = cfg.gtn_bn if teacher is not None else "synthetic"
        if gtn_bn == "real":  # every architecture's statistics from the same real images
            pick = jax.random.randint(bn_batch_key(cfg.seed), (teacher.batch_size,), 0,
                                      len(data.train.labels))
            self.args["bn"] = normalize(self.args["train"][0][pick], data.mean, data.std)
        self.setup = ProxySetup(
            space.name, int(sizes["channels"]), int(sizes["cells"]), tuple(sizes["input_shape"]),
            data.num_classes, teacher, steps, real_steps, real_batch, cfg.real_schedule,
            tuple(data.mean), tuple(data.std), min(1000, len(v_lab)), signature(self.args), gtn_bn)
        self.whole = program == "shared" and jax.default_backend() != "cpu"

    # -- the learners ---------------------------------------------------------------------------

    def _learner_of(self, genotype) -> Callable[[Any], Any]:
        """``arch -> Learner``: the NB201 supernet whose architecture is a runtime argument
        (``genotype`` None), or the genotype's own network whatever ``arch`` is."""
        s = self.setup
        if genotype is None:
            from search_spaces import nb201

            return lambda arch: nb201.shared_learner(arch, s.channels, s.cells, s.num_classes,
                                                     s.input_shape)
        learner = self.space.learner(genotype, s.channels, s.cells, s.num_classes, s.input_shape)
        return lambda arch: learner

    # -- the programs ---------------------------------------------------------------------------

    def _whole_program(self, proxy: str, arch, key):
        """The whole of ``proxy`` for the shared supernet as one compiled program."""
        s = self.setup

        def run(args, arch, key):
            learner = self._learner_of(None)(arch)
            if proxy == "gtn":
                st = train_on_teacher(s.teacher, learner, args["meta"], key, s.steps)
                if s.gtn_bn == "real":
                    st = recalibrate_bn(learner, st, args["bn"])
            else:
                lr, mom = args["opt"]
                st = train_on_real(learner, *args["train"], key, steps=s.real_steps,
                                   batch=s.real_batch, lr=lr, momentum=mom, mean=s.mean,
                                   std=s.std, num_classes=s.num_classes, schedule=s.real_schedule)
            return score(learner, st, *args["val"], s.mean, s.std, s.chunk)

        def build():
            t0 = time.perf_counter()
            compiled = jax.jit(run).lower(self.args, arch, key).compile()
            return compiled, time.perf_counter() - t0

        return PROGRAMS.get(("whole", proxy, s.with_conv()), build)

    def _at(self, proxy: str, steps: int | None) -> ProxySetup:
        """The setup with ``proxy`` trained for ``steps`` (None: the search's own count)."""
        if steps is None:
            return self.setup
        field = "steps" if proxy == "gtn" else "real_steps"
        return dataclasses.replace(self.setup, **{field: int(steps)})

    def _batch_program(self, proxy: str, key, s: ProxySetup):
        """key -> (k_init, xs, ys, lrs, moms) of ``proxy``, compiled once per setup."""

        def fn(args, key):
            k_init, k_data = jax.random.split(key)
            if proxy == "gtn":
                xs, ys = s.teacher.generate(args["meta"], k_data)
                lrs, moms = s.teacher.schedule(args["meta"])
                return k_init, xs[:s.steps], ys[:s.steps], lrs[:s.steps], moms[:s.steps]
            xs, ys = real_batches(k_data, *args["train"], s.real_steps, s.real_batch, s.mean, s.std)
            lr, mom = args["opt"]
            return (k_init, xs, jax.nn.one_hot(ys, s.num_classes),
                    lr_schedule(lr, s.real_steps, s.real_schedule), jnp.full((s.real_steps,), mom))

        def build():
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(self.args, key).compile()
            return compiled, time.perf_counter() - t0

        return PROGRAMS.get(("batches", proxy, s.with_conv()), build)

    def _stepped_learner(self, genotype, key, arch):
        """The SteppedLearner of the genotype (``arch`` None) or of the shared supernet, or the
        genotype's ComposedNB201 (``--program composed``)."""
        s = self.setup
        which = "shared" if arch is not None else genotype.to_str()

        def build():
            if self.program == "composed":
                from search_spaces.nb201_composed import ComposedNB201

                stepped = ComposedNB201(self.space.build(genotype, s.channels, s.cells,
                                                         s.num_classes, s.input_shape),
                                        s.input_shape, s.mean, s.std, s.chunk)
            else:
                stepped = SteppedLearner(self._learner_of(None if arch is not None else genotype),
                                         s.mean, s.std, s.chunk)
            sizes = (s.real_batch,) if s.teacher is None else (s.teacher.batch_size, s.real_batch)
            seconds = stepped.compile(key, sizes, s.input_shape, s.num_classes,
                                      self.args["val"][0].dtype, arch)
            return stepped, seconds

        return PROGRAMS.get(("stepped", self.program, which, s.with_conv()), build)

    # -- scoring --------------------------------------------------------------------------------

    def _run(self, proxy: str, genotype, key, steps: int | None = None
             ) -> tuple[float, float, float]:
        """(score, train seconds, compile seconds) of one trainable proxy (``steps``: a fidelity
        other than the search's)."""
        arch = None
        if self.program == "shared":
            from search_spaces import nb201

            arch = jnp.asarray(nb201.encode(genotype))  # int32 [6]: an argument, not a constant
        if self.whole and steps is None:
            compiled, compile_s = self._whole_program(proxy, arch, key)
            t0 = time.perf_counter()
            value = float(compiled(self.args, arch, key))
            return value, time.perf_counter() - t0, compile_s
        stepped, compile_s = self._stepped_learner(genotype, key, arch)
        batches, batch_compile_s = self._batch_program(proxy, key, self._at(proxy, steps))
        k_init, xs, ys, lrs, moms = batches(self.args, key)
        t0 = time.perf_counter()
        st = stepped.train(k_init, xs, ys, lrs, moms, arch)
        if proxy == "gtn" and self.setup.gtn_bn == "real":
            st = stepped.recalibrate(st, self.args["bn"], arch)
        value = stepped.accuracy(st, *self.args["val"], arch)
        return value, time.perf_counter() - t0, compile_s + batch_compile_s

    def score(self, index: int, genotype, proxies, k_train, steps: int | None = None) -> Row:
        """One architecture's row: genotype, size, FLOPs and the columns of ``proxies``
        (``steps``: the trained proxies' fidelity, default the search's)."""
        t0 = time.perf_counter()
        s = self.setup
        module = self.space.build(genotype, s.channels, s.cells, s.num_classes, s.input_shape)
        row: Row = {"idx": index, "genotype": genotype.to_str(), "space": self.space.name,
                    "params": count_params(module, s.input_shape),
                    "flops": count_flops(module, s.input_shape)}
        zero_cost = [p for p in proxies if p in ZERO_COST_PROXIES]
        if zero_cost:
            for proxy, (value, seconds) in self.zero_cost.score(genotype, k_train,
                                                                zero_cost).items():
                row.update({f"{proxy}_score": value, f"{proxy}_train_s": seconds})
        for proxy in proxies:
            if proxy in COLUMN_PROXIES or proxy in ZERO_COST_PROXIES:
                continue
            value, train_s, compile_s = self._run(proxy, genotype, k_train, steps)
            row.update({f"{proxy}_score": value, f"{proxy}_train_s": train_s,
                        f"{proxy}_compile_s": compile_s})
        row["seconds"] = time.perf_counter() - t0
        return row


__all__ = ["Scorer"]
