"""The `cpu` preset's meta-step written in eager PyTorch, for a side-by-side timing in speed.py.

Same shapes and operations as gtn_nas's meta-step for an MLP or `base_fc` learner (two weight-
normalised 3x3 convolutions, each followed by 3x3/2 max pooling, mean-only BN and LeakyReLU, then
a 4w-unit layer) and an MLP generator with the ``full`` curriculum: weight-normalised layers, the generator's per-step batch-statistics norm,
the learner's mean-only BN (its stored mean carried to the eval-mode meta-loss), T steps of
heavy-ball SGD kept in the autograd graph (``create_graph=True``: exact second order), the
real-data meta-loss, global-norm clipping and Adam. Not bit-matched with the JAX program (other
random streams); it exists to time the same work. PyTorch is optional: ``pip install torch``.

speed.py runs it as a process of its own, so that its peak resident memory is PyTorch's alone:

    python benchmarks/torch_meta_step.py --preset cpu --learner base_fc --learner-width 16 --steps 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(cfg, image_size: int, num_classes: int, threads: int):
    """meta_step(images, labels) -> meta-loss, for a MetaTrainConfig with learner/generator mlp."""
    import torch
    import torch.nn.functional as F

    if cfg.learner not in ("mlp", "base_fc") or cfg.generator != "mlp" or cfg.curriculum != "full":
        raise ValueError("the PyTorch mirror covers learner mlp or base_fc, generator mlp, "
                         "curriculum full")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t, b, d, c = cfg.inner_steps, cfg.batch_size, cfg.noise_dim, num_classes
    hidden, width = cfg.generator_hidden or 512, cfg.learner_width or 256

    def kaiming(fan_in, fan_out, grad=True):
        v = torch.randn(fan_in, fan_out) * math.sqrt(2.0 / fan_in)
        return v.requires_grad_(grad), v.detach().norm(dim=0).requires_grad_(grad)

    def torch_bias(fan_in, n, grad=True):
        bound = 1.0 / math.sqrt(fan_in)
        return torch.empty(n).uniform_(-bound, bound).requires_grad_(grad)

    def wn(x, v, g, bias=None):
        y = (x @ v) * (g / v.norm(dim=0))
        return y if bias is None else y + bias

    gv1, gg1 = kaiming(d + c, hidden)
    gv2, gg2 = kaiming(hidden, image_size)
    meta = {
        "z": torch.randn(t, b, d, requires_grad=True),
        "gv1": gv1, "gg1": gg1, "gs1": torch.ones(hidden, requires_grad=True),
        "gb1": torch.zeros(hidden, requires_grad=True),
        "gv2": gv2, "gg2": gg2, "gbias2": torch_bias(hidden, image_size),
        "log_lr": torch.full((t,), math.log(cfg.init_lr), requires_grad=True),
        "log_mom": torch.full((t,), math.log(cfg.init_momentum), requires_grad=True),
    }
    labels_syn = F.one_hot(torch.arange(t * b) % c, c).float().reshape(t, b, c)
    opt = torch.optim.Adam(meta.values(), lr=cfg.meta_lr, betas=(cfg.meta_b1, cfg.meta_b2),
                           eps=cfg.meta_eps)

    def generate():
        h = wn(torch.cat([meta["z"], labels_syn], -1), meta["gv1"], meta["gg1"])
        mean = h.mean(1, keepdim=True)  # per inner step's batch
        var = ((h - mean) ** 2).mean(1, keepdim=True)
        h = F.leaky_relu((h - mean) * torch.rsqrt(var + 1e-5) * meta["gs1"] + meta["gb1"], 0.1)
        return 2.0 * torch.tanh(wn(h, meta["gv2"], meta["gg2"], meta["gbias2"]))

    if cfg.learner == "mlp":
        def learner_init():
            v1, g1 = kaiming(image_size, width)
            v2, g2 = kaiming(width, c)
            return [v1, g1, torch_bias(image_size, width), torch.zeros(width, requires_grad=True),
                    v2, g2, torch_bias(width, c)]

        def learner(p, stored, x, train):
            v1, g1, b1, bn_bias, v2, g2, b2 = p
            h = wn(x, v1, g1, b1)
            mean = h.mean(0) if train else stored
            return wn(F.leaky_relu(h - mean + bn_bias, 0.1), v2, g2, b2), mean

        stored0 = torch.zeros(width)
    else:  # base_fc on 1-channel square images
        side = int(round(math.sqrt(image_size)))
        w1, w2, fc = (cfg.learner_width or 64), 2 * (cfg.learner_width or 64), 4 * (cfg.learner_width or 64)
        flat = w2 * (-(-(-(-side // 2)) // 2)) ** 2  # two 3x3/2 poolings, padding 1

        def conv_param(cin, cout):
            v = torch.randn(cout, cin, 3, 3) * math.sqrt(2.0 / (9 * cin))
            return v.requires_grad_(True), v.detach().flatten(1).norm(dim=1).requires_grad_(True)

        def learner_init():
            p = []
            for cin, cout in ((1, w1), (w1, w2)):
                p += [*conv_param(cin, cout), torch.zeros(cout, requires_grad=True)]
            v, g = kaiming(flat, fc)
            p += [v, g, torch_bias(flat, fc), torch.zeros(fc, requires_grad=True)]
            v, g = kaiming(fc, c)
            return p + [v, g, torch_bias(fc, c)]

        def learner(p, stored, x, train):
            h = x.reshape(-1, 1, side, side)
            means = []
            for k in range(2):
                v, g, bn_bias = p[3 * k:3 * k + 3]
                w = v * (g / v.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)
                h = F.max_pool2d(F.conv2d(h, w, padding=1), 3, 2, 1)
                mean = h.mean((0, 2, 3)) if train else stored[k]
                means.append(mean)
                h = F.leaky_relu(h - mean.reshape(1, -1, 1, 1) + bn_bias.reshape(1, -1, 1, 1), 0.1)
            v, g, b1, bn_bias, v2, g2, b2 = p[6:]
            h = wn(h.flatten(1), v, g, b1)
            mean = h.mean(0) if train else stored[2]
            means.append(mean)
            return wn(F.leaky_relu(h - mean + bn_bias, 0.1), v2, g2, b2), means

        stored0 = [torch.zeros(w1), torch.zeros(w2), torch.zeros(fc)]

    def meta_step(images, labels):
        xs = generate()
        lrs, moms = meta["log_lr"].exp(), meta["log_mom"].exp()
        p = learner_init()
        buf = [torch.zeros_like(q) for q in p]
        stored = stored0
        for i in range(t):
            logits, stored = learner(p, stored, xs[i], True)
            loss = -(labels_syn[i] * F.log_softmax(logits, -1)).sum() / b
            grads = torch.autograd.grad(loss, p, create_graph=True)
            buf = [moms[i] * m + g for m, g in zip(buf, grads)]
            p = [q - lrs[i] * m for q, m in zip(p, buf)]
        idx = torch.randint(0, images.shape[0], (cfg.meta_batch_size,))
        logits, _ = learner(p, stored, images[idx], False)
        meta_loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        meta_loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(meta.values()), cfg.grad_clip)
        opt.step()
        return float(meta_loss.detach())

    return meta_step


def time_torch_meta_steps(preset: str, steps: int, data_dir, threads: int,
                          overrides: dict | None = None) -> dict:
    """Seconds per eager PyTorch meta-step of ``preset`` (with ``overrides``, e.g. the learner)
    on the real training images."""
    import numpy as np
    import torch

    from benchmarks.common import peak_rss_mb
    from benchmarks.scaling import WARMUP_STEPS
    from gtn_nas.config import MetaTrainConfig, build_config
    from gtn_nas.io.data import load_dataset

    cfg = build_config(MetaTrainConfig, preset, dict(overrides or {}, data_dir=data_dir))
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.split_seed)
    x = (data.train.images.astype(np.float32) / 255.0 - np.asarray(data.mean)) / np.asarray(data.std)
    images = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32))
    labels = torch.from_numpy(data.train.labels.astype(np.int64))
    step = build(cfg, images.shape[1], data.num_classes, threads)
    t0 = time.perf_counter()
    first_loss = step(images, labels)
    first = time.perf_counter() - t0
    for _ in range(WARMUP_STEPS):  # untimed, as the JAX side (scaling.time_meta_steps)
        step(images, labels)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(images, labels)
    wall = time.perf_counter() - t0
    return {"preset": preset, "learner": cfg.learner, "learner_width": cfg.learner_width,
            "steps": steps, "s_per_step": round(wall / steps, 4),
            "first_step_s": round(first, 3), "torch": torch.__version__, "threads": threads,
            "meta_loss_first": round(first_loss, 4), "meta_loss_last": round(loss, 4),
            "peak_memory_mb": peak_rss_mb()}  # its own: ru_maxrss would include speed.py's


def run_torch_meta_steps(preset: str, steps: int, data_dir, threads: int,
                         overrides: dict | None = None) -> dict:
    """``time_torch_meta_steps`` in a fresh process: its peak memory is then PyTorch's own, not
    this (JAX) process's. Raises RuntimeError with the child's last line when it fails."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--preset", preset, "--steps", str(steps),
           "--threads", str(threads), "--overrides", json.dumps(overrides or {})]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the PyTorch meta-step failed: {tail}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: the machine's cores")
    ap.add_argument("--learner", default=None)
    ap.add_argument("--learner-width", type=int, default=None)
    ap.add_argument("--overrides", default="{}", help="config values as JSON (speed.py's)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))  # JAX stays uninitialised here: the peak is PyTorch's alone
    overrides = json.loads(args.overrides)
    overrides.update({k: v for k, v in (("learner", args.learner),
                                        ("learner_width", args.learner_width)) if v is not None})
    threads = args.threads or len(os.sched_getaffinity(0))
    print(json.dumps(time_torch_meta_steps(args.preset, args.steps, args.data_dir, threads,
                                           overrides)))


if __name__ == "__main__":
    main()
