#!/usr/bin/env bash
# One ~10-minute call of a lent GPU (the device tool's `run`), prepared: the suite's `teach` and
# `conv` stages side by side (small learners leave the GPU mostly idle; each process gets 40 % of
# its memory), then `speed` alone, so its timings are not shared. Everything worth keeping goes to
# $OUT (logs, both suite.json, a tarball of the suite folders without checkpoints or the paper
# GTN's 70 MB best state).
#
#   run(command="bash benchmarks/device_call.sh", carry=["device_data"], timeout_s=595)
#   (device_data/: cp -r ../shared/data/mnist device_data/ beforehand)
# Knobs (environment): B1 (teach and conv budget, s; 360), B2 (speed, s; 130), CONV_ITERS (2100:
# 3x the preset, what ~270 s of meta-training holds at <= 0.13 s a meta-step), X=--smoke, S, DATA.
#
# Then here: tar xzf <files_at>/suite.tgz and
#   python benchmarks/device_suite.py --report runs/ds/a --record   (and runs/ds/b)
# On CPU, to check the script: OUT=/tmp/o X=--smoke B1=200 B2=100 bash benchmarks/device_call.sh
set -u
export PYTHONUNBUFFERED=1
X=${X:-} B1=${B1:-360} B2=${B2:-130} CONV_ITERS=${CONV_ITERS:-2100} S=${S:-runs/ds} DATA=${DATA:-device_data}
mkdir -p "$S" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tail -2
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tail -3
suite() { python3 benchmarks/device_suite.py $X --data-dir "$DATA" "$@"; }
(XLA_PYTHON_CLIENT_MEM_FRACTION=0.4 suite --budget "$B1" --stages teach --out "$S/a" > "$OUT/a.log" 2>&1) &
(XLA_PYTHON_CLIENT_MEM_FRACTION=0.4 suite --budget "$B1" --stages conv --conv-iterations "$CONV_ITERS" --out "$S/b" > "$OUT/b.log" 2>&1) &
wait
suite --budget "$B2" --stages speed --out "$S/a" > "$OUT/c.log" 2>&1
tar czf "$OUT/suite.tgz" --exclude="$S/a/teach/paper-mnist/best" --exclude=checkpoints \
    --exclude=xla-cache --exclude=.no-tfds "$S"
cp "$S/a/suite.json" "$OUT/a.json"; cp "$S/b/suite.json" "$OUT/b.json"
ls -la "$OUT"; tail -n 4 "$OUT"/a.log "$OUT"/b.log "$OUT"/c.log
cat "$S/a/suite.md" "$S/b/suite.md"
