#!/bin/sh
# vdisk convert vs qemu-img convert: a 1 GiB qcow2 with ~50% data (every other
# 1 MiB of random data), converted to raw and to qcow2; 3 runs each, medians and ratio.
# Usage: sh bench/convert.sh   (after npm run build)
set -eu
# As the .mjs benchmarks do (bench/env.mjs): Node reads NODE_EXTRA_CA_CERTS at every start.
unset NODE_EXTRA_CA_CERTS
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK="node $ROOT/bin/vdisk.cjs"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-bench-XXXXXX")
trap 'rm -rf "$DIR"' EXIT INT TERM
cd "$DIR"
head -c 1048576 /dev/urandom > chunk.bin
qemu-img create -q -f qcow2 src.qcow2 1G
cmds=""
i=0
while [ $i -lt 1024 ]; do cmds="$cmds -c 'write -s chunk.bin ${i}M 1M'"; i=$((i + 2)); done
eval qemu-io $cmds src.qcow2 > /dev/null

now() { date +%s.%N; }
median() { sort -n | sed -n 2p; }
run3() { # tool fmt -> median seconds of 3 runs
  for r in 1 2 3; do
    rm -f out
    t0=$(now); $1 convert -f qcow2 -O "$2" src.qcow2 out; t1=$(now)
    echo "$t1 - $t0" | bc -l
  done | median
}
for fmt in raw qcow2; do
  q=$(run3 qemu-img "$fmt")
  v=$(run3 "$VDISK" "$fmt")
  printf 'convert qcow2 -> %-5s qemu-img %.3fs  vdisk %.3fs  ratio vdisk/qemu %.2f\n' "$fmt" "$q" "$v" "$(echo "$v / $q" | bc -l)"
done
