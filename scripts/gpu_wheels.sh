#!/usr/bin/env bash
# Fill .gpu/wheels with what the GPU machine's image lacks, for scripts/gpu_proof.sh (run it
# here, on a machine that reaches PyPI; nothing can be fetched on the GPU machine).
#
# The image (see the device notes: Python 3.12, torch 2.11 + CUDA 13.0, transformers,
# accelerate, safetensors, tokenizers, huggingface-hub, numpy, scipy, pandas, matplotlib, rich,
# filelock, ...) has no pydantic, tomli-w, diffusers or bitsandbytes. These are fetched with
# `pip download --no-deps`, pinned to the versions tested here (with pydantic's own needs:
# pydantic-core, annotated-types, typing-inspection, and typing-extensions >= 4.16, which the
# image has in a version not recorded). cryptography is not carried: the proof signs nothing,
# and unsigned bundles need no cryptography library. bitsandbytes' wheel (43 MB, one
# library per CUDA version) is cut down to its CPU and CUDA 13 libraries (about 8 MB) so the
# working tree that travels stays far under the 64 MiB a call may carry.
#
#   bash scripts/gpu_wheels.sh                 # -> .gpu/wheels (ignored by git)
#   GPU_WHEELS_PY=3.11 GPU_WHEELS_DIR=/tmp/w bash scripts/gpu_wheels.sh   # for a CPU rehearsal
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${GPU_WHEELS_DIR:-.gpu/wheels}
PYVER=${GPU_WHEELS_PY:-3.12}
PY=${PYTHON:-python3}
# keep the CUDA libraries of these versions (the image's torch is a CUDA 13.0 build)
KEEP_CUDA=${GPU_WHEELS_KEEP_CUDA:-130 132}
PINS=(
  "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5"
  "typing-extensions==4.16.0" "tomli-w==1.2.0" "diffusers==0.42.1" "bitsandbytes==0.50.2"
)
mkdir -p "$DIR"
case $DIR in
  /*) ;;  # outside the checkout: nothing to ignore
  *) if git rev-parse --git-dir >/dev/null 2>&1; then
       rc=0; git check-ignore -q "$DIR/x.whl" || rc=$?
       if [ "$rc" = 1 ]; then  # not ignored yet (.gitignore names /.gpu/): never committed, still carried
         mkdir -p "$(dirname "$(git rev-parse --git-path info/exclude)")"
         echo "/${DIR%%/*}/" >>"$(git rev-parse --git-path info/exclude)"
       fi
     fi ;;
esac
rm -f "$DIR"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DIR" "${PINS[@]}"
KEEP_CUDA="$KEEP_CUDA" "$PY" - "$DIR" <<'EOF'
"""Cut bitsandbytes' wheel down to the CPU library and the CUDA versions kept (RECORD too)."""
import os
import re
import sys
import zipfile
from pathlib import Path

keep = {f"libbitsandbytes_cuda{v}.so" for v in os.environ["KEEP_CUDA"].split()} | {"libbitsandbytes_cpu.so"}
for wheel in Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    def dropped(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return bool(re.fullmatch(r"libbitsandbytes_\w+\.(so|dll|dylib)", base)) and base not in keep
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if dropped(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if not dropped(line.split(",", 1)[0])) + "\n").encode()
            dst.writestr(info, data)
    before, after = wheel.stat().st_size, tmp.stat().st_size
    tmp.replace(wheel)
    print(f"{wheel.name}: {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB (kept {', '.join(sorted(keep))})")
EOF
ls -la "$DIR"
du -sh "$DIR"
echo "carry it: run(command=\"bash scripts/gpu_proof.sh\", carry=[\"$DIR\"], timeout_s=570)"
