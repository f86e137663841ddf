#!/bin/sh
# Static SASS check of onebit_cuda.cuh's XNOR kernels (no GPU needed): instruction counts per kernel.
#   sh bench/sass_xnor.sh [NVDISASM]   -> writes build/xnor.sass (all of onebit_cuda.cuh's kernels) and prints the counts
# With a full CUDA toolkit: cuobjdump -sass build/xnor.cubin gives the same listing. nvdisasm of CUDA 11.8
# (Debian's nvidia-cuda-toolkit) also works if the CUDA 13 cubin's ELF header is rewritten to the old ABI
# (sass_patch_elf.py): the SASS encoding of sm_90 is the same.
set -e
cd "$(dirname "$0")/.."
NVDISASM=${1:-nvdisasm}
mkdir -p build
printf '#define ONEBIT_IMPLEMENTATION\n#include "../onebit_cuda.cuh"\n' > build/sass_tu.cu
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -cubin -o build/xnor.cubin build/sass_tu.cu
if command -v cuobjdump >/dev/null 2>&1; then
    cuobjdump -sass build/xnor.cubin > build/xnor.sass
elif [ -f draft/xnor/sass_patch_elf.py ]; then # local workaround (not in the repository): CUDA 11.8's nvdisasm on a CUDA 13 cubin
    python3 draft/xnor/sass_patch_elf.py build/xnor.cubin build/xnor_oldabi.cubin
    "$NVDISASM" -c build/xnor_oldabi.cubin > build/xnor.sass
else
    echo "sass.sh: needs cuobjdump (a full CUDA toolkit)" >&2
    exit 1
fi
awk '
/^[[:space:]]*\.text\./ || /Function :/ { if (name != "") report(); name = $0; delete c; next }
/^[[:space:]]*\/\*[0-9a-f]+\*\// {
    op = $2; if (op ~ /^@/) op = $3; sub(/\..*/, "", op); c[op]++; full = $0
    if (match(full, /BMMA\.[A-Z0-9.]+/)) c["BMMA:" substr(full, RSTART, RLENGTH)]++
    if (full ~ /FFMA/ && full ~ /FTZ/) c["FFMA.FTZ"]++
}
function report() {
    n = name; gsub(/[[:space:]:]/, "", n)
    printf "%s\n   BMMA %d  HMMA %d  FFMA %d (FTZ %d)  FADD %d  IADD3 %d  I2F %d  I2FP %d  LDSM %d  LDS %d  STG %d  BRA %d\n", n, c["BMMA"], c["HMMA"], c["FFMA"], c["FFMA.FTZ"], c["FADD"], c["IADD3"], c["I2F"], c["I2FP"], c["LDSM"], c["LDS"], c["STG"], c["BRA"]
    for (k in c) if (k ~ /^BMMA:/) printf "   %s x%d\n", k, c[k]
}
END { if (name != "") report() }' build/xnor.sass
