#!/usr/bin/env bash
# The data-parallel device check in one call, for a GPU machine that has Python torch but no Rust.
#
#   here:   scripts/setup-nccl.sh && cargo build --release -p balance-bench --features nccl
#           mkdir -p .device && cp target/release/balance-bench .device/      (.device/ is git-ignored)
#   there:  scripts/device-check.sh .device/balance-bench                     (carry .device)
#
# It trains one small comparison (static, grad_norm, mgda; 2 seeds) three ways and compares the reports:
#   single   one process on cuda:0, no process group;
#   nccl1    torchrun, 1 rank on cuda:0: the model's tensors go through NCCL (the report says "over nccl");
#   nccl2    torchrun, 2 ranks, one GPU each, when the machine has 2 GPUs (NCCL refuses two ranks on one).
# It prints each report's device line, the largest AUC / log-loss difference to `single`, and the median
# step time, writes them to $OUT/summary.txt, and exits 1 when a difference exceeds 1e-4 or NCCL was not
# used. DEVICE=cpu runs the same flow over Gloo on CPU: that is how the script itself is tested here.
set -euo pipefail

BIN=$(realpath "${1:?usage: scripts/device-check.sh PATH/TO/balance-bench}")
OUT=${OUT:-/tmp/balance-device-check}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
rm -rf "$OUT"/single "$OUT"/nccl1 "$OUT"/nccl2

TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ARGS=(run --balancer static --balancer grad_norm --balancer mgda --seeds 2 --epochs 1
      --rows 20000 --holdout-rows 10000 --batch-size 1000 --quiet --dist-timeout 120 --device "$DEVICE")
echo "device check: $DEVICE, $GPUS GPU(s) visible, torch lib $TORCH_LIB"

# Every step runs even when an earlier one failed (one call should bring back all there is to learn);
# a failed step shows its log's tail, and the summary below fails the script.
step() {
    local name=$1
    shift
    if ! "$@" > "$OUT/$name.log" 2>&1; then
        echo "$name: failed; the errors in $OUT/$name.log:"
        grep -m 8 -E "^error|caused by|panicked|Error" "$OUT/$name.log" || tail -n 15 "$OUT/$name.log"
    fi
}
torchrun() { "$PY" -m torch.distributed.run --master-port "$(free_port)" "$@"; }
step single "$BIN" "${ARGS[@]}" --out "$OUT/single"
step nccl1 torchrun --nproc-per-node 1 --no-python "$BIN" "${ARGS[@]}" --out "$OUT/nccl1"
if [[ "$DEVICE" == cpu || "$GPUS" -ge 2 ]]; then
    step nccl2 torchrun --nproc-per-node 2 --no-python "$BIN" "${ARGS[@]}" --out "$OUT/nccl2"
else
    echo "nccl2: skipped (needs 2 GPUs, this machine has $GPUS)"
fi

"$PY" - "$OUT" "$DEVICE" <<'EOF' | tee "$OUT/summary.txt"
import json, os, statistics, sys

out, device = sys.argv[1], sys.argv[2]

def load(name):
    path = os.path.join(out, name, "report.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        report = json.load(f)
    metrics = {
        (run["label"], run["seed"], m["task"]): (m["auc"], m["log_loss"])
        for run in report["runs"]
        for m in run["metrics"]
    }
    step_ms = statistics.median(run["median_step_ms"] for run in report["runs"])
    return report["device"], metrics, step_ms

single = load("single")
if single is None:
    sys.exit("single: no report (see single.log)")
failed = False
print(f"single: {single[0]}; median step {single[2]:.2f} ms")
for name in ("nccl1", "nccl2"):
    other = load(name)
    if other is None:
        if os.path.exists(os.path.join(out, name + ".log")):
            print(f"{name}: no report (see {name}.log)")
            failed = True
        continue
    if other[1].keys() != single[1].keys():
        print(f"{name}: other runs than single")
        failed = True
        continue
    diff = max(
        abs(a - b)
        for key, pair in other[1].items()
        for a, b in zip(pair, single[1][key])
    )
    backend_ok = device == "cpu" or "over nccl" in other[0]
    ok = diff <= 1e-4 and backend_ok
    failed |= not ok
    print(
        f"{name}: {other[0]}; median step {other[2]:.2f} ms ({other[2] / single[2]:.2f}x single); "
        f"largest metric difference to single {diff:.2e} ({'ok' if ok else 'FAILED'}"
        f"{'' if backend_ok else ': NCCL not used'})"
    )
sys.exit(1 if failed else 0)
EOF
