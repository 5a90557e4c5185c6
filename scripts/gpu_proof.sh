#!/usr/bin/env bash
# The GPU proof of issue #23, in one call on a machine with an NVIDIA GPU (docs/gpu.md).
#
#   bash scripts/gpu_proof.sh            # results under $OUT (default out/gpu-proof)
#
# 1. Refuses to start without CUDA, in one line, exit 2, before it installs or writes anything.
# 2. Installs what the machine's image lacks from the wheels in .gpu/wheels (filled here by
#    scripts/gpu_wheels.sh; nothing can be fetched there) into a private folder on PYTHONPATH.
# 3. Runs, each under its own `timeout` so one hanging step does not lose the rest, within a
#    budget (GPU_PROOF_BUDGET_S, default 470 s, about 8 minutes), most important first:
#      preflight   env.json (GPU, driver, CUDA, libraries), the tiny models built
#      smoke       harness run matrices/gpu-smoke.toml on cuda:0
#      cert-ref    harness run matrices/gpu-cert.toml on the CPU, bundled (beside the smoke
#                  matrix, on 4 of the CPU cores)
#      cert-gpu    harness certify --reference <CPU bundle> --device cuda:0, the run bundled
#      cert-back   harness certify --reference <GPU bundle> --device cpu
#      calibrate   harness calibrate <GPU run> <CPU reference run>: the composite rule calibrated
#                  on the GPU's executions against the CPU's (its scope names the GPU, driver, CUDA)
#      all         one cell on device = "all" (a worker per device, side by side)
#      sampling    can the device's sampling be replayed? multinomial against argmax(p / E) on
#                  the device's generator, a seeded generation's picks predicted by draws
#                  regenerated from the seed, two fresh processes compared, and what
#                  harness replay says of an honest candidate made on the device
#                  (python -m harness.workflows.gpu_sampling; about 30 s)
#      overhead    scripts/overhead.py --quick --max-new-tokens 128 --device cuda:0: harness /
#                  bare, profile on / off interleaved (A/B/A/B), 8 cells a column
#      summary     summary.md + summary.json (python -m harness.workflows.gpu_proof summary)
# 4. Leaves in $OUT at most 6 files: proof.log, summary.md, summary.json, runs.tar.gz (every
#    run folder without its .npz artifacts), bundles.tar.gz (the two certify bundles, artifacts
#    included), steps.jsonl.
#
# GPU_PROOF_STEPS="smoke cert overhead all" picks steps (a rerun of what failed); preflight and
# summary always run. GPU_PROOF_REHEARSE=1 runs the same steps on a CPU (the certify and overhead
# targets become cpu; every figure is then labelled a rehearsal): for testing the script here.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
REHEARSE=${GPU_PROOF_REHEARSE:-0}
OUT=${OUT:-$ROOT/out/gpu-proof}
WORK=${GPU_PROOF_WORK:-/tmp/gpu-proof-work}
WHEELS=${GPU_PROOF_WHEELS:-$ROOT/.gpu/wheels}
SITE=${GPU_PROOF_SITE:-/tmp/gpu-proof-site}
BUDGET=${GPU_PROOF_BUDGET_S:-470}
STEPS=${GPU_PROOF_STEPS:-smoke cert all sampling overhead}
RESERVE=25  # seconds kept for the summary and the archives

# --- 1. CUDA, or one line and exit 2 ------------------------------------------------------------
if [ "$REHEARSE" != "1" ]; then
  if ! why=$("$PY" -m harness.workflows.gpu_proof check 2>/dev/null); then
    echo "gpu_proof: refusing to start: ${why:-$PY cannot run (is python3 with torch installed?)}" >&2
    exit 2
  fi
fi
GPU=cuda:0
[ "$REHEARSE" = "1" ] && GPU=cpu

START=$(date +%s)
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
LOG=$OUT/proof.log
: >"$LOG"
[ "$REHEARSE" = "1" ] && touch "$WORK/REHEARSAL"
say() { echo "[gpu_proof +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S CMD...: run CMD under timeout (SIGTERM first: harness run and certify then
# end as on Ctrl-C, keeping every record; SIGKILL 10 s later), log it, append the outcome to
# steps.jsonl. STEP_BG=1 marks a step run beside the others (its wall is not added up).
step() {
  local name=$1 limit=$2
  shift 2
  local left=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    say "$name: not run (out of time: ${left}s left)"
    printf '{"name":"%s","outcome":"not run (out of time)","rc":null,"wall_s":0,"limit_s":%s}\n' "$name" "$left" >>"$WORK/steps.jsonl"
    return 99
  fi
  say "$name: start (limit ${limit}s): $*"
  local t0 rc outcome
  t0=$(date +%s.%N)
  timeout -s TERM -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local wall
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  case $rc in
    0) outcome=ok ;;
    124|137) outcome="timed out" ;;
    *) outcome="exit $rc" ;;
  esac
  say "$name: $outcome in ${wall}s"
  printf '{"name":"%s","outcome":"%s","rc":%s,"wall_s":%s,"limit_s":%s,"background":%s}\n' "$name" "$outcome" "$rc" \
    "$wall" "$limit" "$([ "${STEP_BG:-0}" = 1 ] && echo true || echo false)" >>"$WORK/steps.jsonl"
  return "$rc"
}
wants() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }

# --- 2. what the image lacks, from the carried wheels -------------------------------------------
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  rm -rf "$SITE"
  step install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  say "install: no wheels in $WHEELS (scripts/gpu_wheels.sh fills it); using the image's packages"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export CONSENSUS_HARNESS_HOME=${CONSENSUS_HARNESS_HOME:-$WORK/home}
export MPLBACKEND=Agg
H=("$PY" -m harness.cli)

step preflight 90 "$PY" -m harness.workflows.gpu_proof preflight --work "$WORK" --device "$GPU"

# --- 3. the steps -----------------------------------------------------------------------------
REF_PID=
if wants cert; then  # the CPU reference runs beside the smoke matrix (it needs no GPU)
  ( LOG=$WORK/cert-ref.log STEP_BG=1
    step cert-ref 150 "${H[@]}" run matrices/gpu-cert.toml --out "$WORK/cert-ref" --no-progress \
      && step cert-ref-bundle 40 "${H[@]}" bundle "$WORK/cert-ref" --out "$WORK/cpu.bundle.zip" ) >/dev/null 2>&1 &
  REF_PID=$!
fi
if wants smoke; then
  step smoke 270 "${H[@]}" run matrices/gpu-smoke.toml --out "$WORK/smoke" --no-progress
  [ -f "$WORK/smoke/report.json" ] || step smoke-report 40 "${H[@]}" report "$WORK/smoke" --no-verify
fi
if [ -n "$REF_PID" ]; then
  wait "$REF_PID"
  cat "$WORK/cert-ref.log" >>"$LOG" 2>/dev/null  # its own log while it ran beside the smoke matrix
fi
if wants cert && [ -f "$WORK/cpu.bundle.zip" ]; then
  step cert-gpu 120 "${H[@]}" certify --reference "$WORK/cpu.bundle.zip" --device "$GPU" --out "$WORK/cert-gpu" \
    --no-progress
  [ -f "$WORK/cert-gpu/certificate.json" ] \
    && step cert-gpu-bundle 40 "${H[@]}" bundle "$WORK/cert-gpu" --out "$WORK/gpu.bundle.zip"
  [ -f "$WORK/gpu.bundle.zip" ] \
    && step cert-back 120 "${H[@]}" certify --reference "$WORK/gpu.bundle.zip" --device cpu --out "$WORK/cert-back" \
      --no-progress
  # the GPU run calibrated against the CPU reference: their executions of the same tasks are honest
  # pairs across machines (the GPU's configurations first: those are what the file calibrates)
  [ -d "$WORK/cert-gpu" ] && [ -d "$WORK/cert-ref" ] \
    && step calibrate 90 "${H[@]}" calibrate "$WORK/cert-gpu" "$WORK/cert-ref" --rule composite \
      --out "$WORK/calibration-device.json" --report "$WORK/calibration" 2>&1 | tee "$WORK/calibration.log"
elif wants cert; then
  say "cert: no CPU reference bundle; certify steps not run"
fi
wants all && step all 60 "$PY" -m harness.workflows.gpu_proof all-devices --work "$WORK"
if wants sampling; then
  step sampling-exec 90 "${H[@]}" exec matrices/tasks/tiny-musicgen-pop.json --device "$GPU" --load warm \
    --out "$WORK/sampling-candidate"
  REPLAY_LINE=$(timeout 120 "${H[@]}" replay matrices/tasks/tiny-musicgen-pop.json "$WORK/sampling-candidate" 2>&1 | head -n 1)
  say "sampling: harness replay of the device's candidate: ${REPLAY_LINE:-no output}"
  for n in 1 2; do  # the same seeded generation in two fresh processes
    step "sampling-record-$n" 60 "$PY" -m harness.workflows.gpu_sampling record --device "$GPU" \
      --json "$WORK/sampling-record-$n.json" >/dev/null
  done
  step sampling 60 "$PY" -m harness.workflows.gpu_sampling measure --device "$GPU" --json "$WORK/sampling.json" \
    --records "$WORK/sampling-record-1.json" "$WORK/sampling-record-2.json" --replay "${REPLAY_LINE:-no output}"
fi
wants overhead && step overhead 150 "$PY" scripts/overhead.py --quick --max-new-tokens 128 --device "$GPU" \
  --skip-reference --skip-worker --rounds 2 --threads 4 --json "$WORK/overhead.json"

# --- 4. the summary and the archives (always) ------------------------------------------------------
timeout -k 10 60 "$PY" -m harness.workflows.gpu_proof summary --work "$WORK" --out "$OUT" 2>&1 | tee -a "$LOG"
cp "$WORK/steps.jsonl" "$OUT/steps.jsonl" 2>/dev/null
(cd "$WORK" && tar czf "$OUT/runs.tar.gz" --exclude='*.npz' --exclude='*.bundle.zip' --exclude=home . 2>/dev/null)
(cd "$WORK" && ls ./*.bundle.zip >/dev/null 2>&1 && tar czf "$OUT/bundles.tar.gz" ./*.bundle.zip)
for f in "$OUT"/*; do  # a file over 16 MiB would not come back
  [ "$(stat -c %s "$f")" -gt 16000000 ] && say "$(basename "$f") is over 16 MB: removed" && rm -f "$f"
done
say "done in $(( $(date +%s) - START ))s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit 0
