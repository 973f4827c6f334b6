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

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
fail() { echo "slower_cpu: $1" >&2; exit "${2:-1}"; }

[ $# -ge 2 ] || usage
cpus=$1
shift
if ! [[ $cpus =~ ^[0-9]+([.][0-9]+)?$ ]] || [ "$(awk -v c="$cpus" 'BEGIN{print (c >= 0.01)}')" != 1 ]; then
  fail "CPUS must be a number of cores of at least 0.01 (e.g. 1.1), not '$cpus'" 2
fi
case ${SLOWER_CPU_ISA:-avx2} in
  avx2) export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 ;;
  native) ;;
  *) fail "SLOWER_CPU_ISA must be avx2 (the default) or native, not '$SLOWER_CPU_ISA'" 2 ;;
esac
[ "$(id -u)" = 0 ] || fail "needs root, to make a cgroup (run it as root, or with sudo)"
period=100000
quota=$(awk -v c="$cpus" -v p=$period 'BEGIN{printf "%.0f", c * p}')

# The group sits at the top of the hierarchy, beside the caller's own: a nested call is held
# to its own quota, not to the outer one's.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
  parent=/sys/fs/cgroup
  grep -qw cpu $parent/cgroup.controllers \
    || fail "cgroup v2 without the cpu controller here (cgroup.controllers: $(cat $parent/cgroup.controllers))"
  # the cpu controller must be on for the top level's groups (it stays on afterwards)
  grep -qw cpu $parent/cgroup.subtree_control || echo +cpu > $parent/cgroup.subtree_control \
    || fail "cannot turn on the cpu controller in $parent/cgroup.subtree_control"
  procs=cgroup.procs
elif [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then  # cgroup v1
  parent=/sys/fs/cgroup/cpu
  procs=tasks
else
  fail "no cgroup cpu controller under /sys/fs/cgroup (needs cgroup v1's cpu or v2 with cpu)"
fi
group=$(mktemp -d "$parent/mexlib-slower-XXXXXX" 2>/dev/null) || fail "cannot make a cgroup under $parent"
child=

cleanup() {
  trap - EXIT TERM HUP INT
  if [ -n "$child" ]; then  # stopped by a signal: the command goes too
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  echo $$ > "$parent/$procs" 2>/dev/null || true
  local left
  left=$(cat "$group/$procs" 2>/dev/null | tr '\n' ' ')
  if [ -n "${left// /}" ]; then
    echo "slower_cpu: processes still in $group after the command: $left(left running there)" >&2
  elif ! rmdir "$group"; then
    echo "slower_cpu: could not remove $group" >&2
  fi
}
trap cleanup EXIT
trap 'cleanup; trap - TERM; kill -TERM $$' TERM
trap 'cleanup; trap - HUP; kill -HUP $$' HUP
trap 'cleanup; trap - INT; kill -INT $$' INT

if [ "$procs" = cgroup.procs ]; then
  echo "$quota $period" > "$group/cpu.max" || fail "cannot set $group/cpu.max to '$quota $period'"
else
  echo $period > "$group/cpu.cfs_period_us" || fail "cannot set $group/cpu.cfs_period_us"
  echo "$quota" > "$group/cpu.cfs_quota_us" || fail "cannot set a quota of $quota µs in $group"
fi

echo "[slower_cpu] $cpus of $(nproc) cores' time, kernels: ${ONEDNN_MAX_CPU_ISA:-native}: $*" >&2
echo $$ > "$group/$procs"
started=$(date +%s.%N)
status=0
"$@" <&0 &  # in the background, so that a signal to this script can reach it; stdin kept
child=$!
wait "$child" || status=$?
child=
elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.0f", e - s}')
throttled=$(awk '/^throttled_time/{printf "%.0f", $2 / 1e9} /^throttled_usec/{printf "%.0f", $2 / 1e6}' "$group/cpu.stat")
echo "[slower_cpu] exit status $status after ${elapsed} s (throttled ${throttled:-0} s in all)" >&2
exit $status
