#!/bin/bash
# By hand, not by pytest: N runs of tests/experiments/test_ddp.py's two-rank CPU command, each watched
# for a hang (no exit within 120 s); a hung run's processes are dumped with py-spy, then killed.
#   nice -n 10 tests/reliability/ddp_exit_loop.sh 100 /tmp/ddp_loop     # from the repository root
#   (py-spy: pip install --target /tmp/pyspy py-spy; summary in /tmp/ddp_loop/summary)
N=${1:-100}; LOG=${2:-/tmp/ddp_loop}; PY=${PYTHON:-python}; PYSPY=${PYSPY:-/tmp/pyspy/bin/py-spy}
mkdir -p "$LOG"; : > "$LOG/summary"
cat > "$LOG/cfg.yaml" <<'YAML'
name: tiny
data: {name: mnist5k, subset: [256, 200], batch_size: 64, eval_batch_size: 100}
model: {name: cnn, widths: [4, 4, 8, 8]}
optimizer: {name: sfw, mode: group_k_support, k: 0.5, width: 5.0, lr: 0.1}
schedule: {name: cosine, warmup_epochs: 0.5}
training: {epochs: 2, seed: 3, progress: false, check_rank_consistency: true}
YAML
for i in $(seq 1 "$N"); do
  OUT=$(mktemp -d); start=$(date +%s)
  PORT=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  setsid env OMP_NUM_THREADS=1 PYTHONPATH=src $PY -m torch.distributed.run --nproc_per_node=2 \
    --master-addr=127.0.0.1 --master-port="$PORT" -m sparsefw.cli train --config "$LOG/cfg.yaml" \
    --out "$OUT/run" > "$LOG/out.$i" 2> "$LOG/err.$i" &
  pid=$!; rc=
  for _ in $(seq 1 240); do
    if ! kill -0 $pid 2>/dev/null; then wait $pid; rc=$?; break; fi
    sleep 0.5
  done
  if [ -z "$rc" ]; then
    for p in $(pgrep -s $pid); do echo "== $p"; "$PYSPY" dump --native --pid "$p"; done > "$LOG/hang.$i" 2>&1
    kill -9 -- -$pid; wait $pid; rc=hang
  fi
  echo "run $i rc=$rc $(( $(date +%s) - start ))s" >> "$LOG/summary"
  rm -rf "$OUT"
done
echo "$(grep -c 'rc=0 ' "$LOG/summary") of $N runs exited 0; hangs: $(grep -c 'rc=hang' "$LOG/summary")"
