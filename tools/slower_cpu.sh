#!/usr/bin/env bash
# Run a command as on a slower, AVX2-only machine, to check a time budget before such a machine
# is at hand (issue 8):
#
#   tools/slower_cpu.sh CPUS COMMAND [ARGS...]
#   tools/slower_cpu.sh 1.1 .ci/run                  # the whole CI run
#   tools/slower_cpu.sh 1.1 make reproduce PROFILE=smoke
#
# * Speed: the command and everything it starts get CPUS cores' worth of CPU time (a CFS
#   quota per 100 ms, in a cgroup of their own), however many cores they see. The machine's
#   core count does not change, so thread counts stay what they would be.
# * Instruction set: oneDNN and ATen are limited to their AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2,
#   ATEN_CPU_CAPABILITY=avx2), so nothing uses AVX-512, and bf16 takes the fallback of a CPU
#   without it (mexlib.hardware). SLOWER_CPU_ISA=native keeps the machine's own kernels.
#
# Calibrate with the training step (benchmarks/train_throughput.py, or the step of the cpu
# profile): on the development machine (2 cores of an AMD EPYC, AVX2 step about 75 ms) 1.1 gave
# 135-160 ms per step, the 2-core AVX2 machine of issue 8 steps in about 135 ms. Throttling in
# 100 ms slices is coarser than a slower clock, so short timings vary more than on a real machine.
#
# Needs root and a writable cgroup file system (v1 with the cpu controller, or v2).
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
cpus=$1
shift
if ! [[ $cpus =~ ^[0-9]+([.][0-9]+)?$ ]] || [ "$(awk -v c="$cpus" 'BEGIN{print (c >= 0.01)}')" != 1 ]; then
  echo "slower_cpu: CPUS must be a number of cores of at least 0.01 (e.g. 1.1), not '$cpus'" >&2
  exit 2
fi
period=100000
quota=$(awk -v c="$cpus" -v p=$period 'BEGIN{printf "%d", c * p}')

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
  parent=/sys/fs/cgroup
  group=$parent/mexlib-slower-$$
  grep -qw cpu $parent/cgroup.subtree_control || echo +cpu > $parent/cgroup.subtree_control
  mkdir "$group"
  echo "$quota $period" > "$group/cpu.max"
  stat_file=$group/cpu.stat
  procs=cgroup.procs
elif [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then  # cgroup v1
  parent=/sys/fs/cgroup/cpu
  group=$parent/mexlib-slower-$$
  mkdir "$group"
  echo $period > "$group/cpu.cfs_period_us"
  echo "$quota" > "$group/cpu.cfs_quota_us"
  stat_file=$group/cpu.stat
  procs=tasks
else
  echo "slower_cpu: no cgroup cpu controller found under /sys/fs/cgroup (needs root, cgroup v1 or v2)" >&2
  exit 1
fi

cleanup() {
  echo $$ > "$parent/$procs" 2>/dev/null || true
  rmdir "$group" 2>/dev/null || true
}
trap cleanup EXIT

if [ "${SLOWER_CPU_ISA:-avx2}" != native ]; then
  export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
fi
echo "[slower_cpu] $cpus of $(nproc) cores' time, kernels: ${ONEDNN_MAX_CPU_ISA:-native}: $*" >&2
echo $$ > "$group/$procs"
started=$(date +%s.%N)
status=0
"$@" || status=$?
elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.0f", e - s}')
throttled=$(awk '/^throttled_(time|usec)/{print ($1 == "throttled_time" ? $2 / 1e9 : $2 / 1e6)}' "$stat_file")
echo "[slower_cpu] exit status $status after ${elapsed} s (throttled ${throttled%.*} s in all)" >&2
exit $status
