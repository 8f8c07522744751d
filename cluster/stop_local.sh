#!/usr/bin/env bash
# Stop the local Ray head started by cluster/start_local.sh, and only that one.
#
#   cluster/stop_local.sh [--port 6379] [--temp-dir DIR] [--grace 15]
#
# `ray stop` would end every Ray process of this user on the machine (other heads, other people's local
# runs). Instead this finds the processes whose command line names this head's temp dir (GCS, raylet,
# dashboard, agents, log monitor), sends each SIGTERM by pid, and SIGKILLs what is left after the grace
# period. Ray's worker processes exit by themselves once their raylet is gone.
set -euo pipefail

port=6379
temp_dir=""
grace=15
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --temp-dir) temp_dir=$2; shift 2 ;;
    --grace) grace=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "stop_local.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
temp_dir=${temp_dir:-/tmp/ray-intint-$port}

head_pids() {
  local pid
  for cmdline in /proc/[0-9]*/cmdline; do
    pid=${cmdline#/proc/}; pid=${pid%/cmdline}
    [[ $pid == "$$" ]] && continue
    if tr '\0' ' ' < "$cmdline" 2>/dev/null | grep -qF -- "$temp_dir/"; then
      echo "$pid"
    fi
  done
}

pids=$(head_pids)
if [[ -z $pids ]]; then
  echo "no Ray head found for $temp_dir"
  exit 0
fi
echo "stopping Ray head ($temp_dir): pids $(echo $pids | tr '\n' ' ')"
# Re-scan every second: processes the head spawned while it was stopping (agents, job drivers) count too.
for _ in $(seq "$grace"); do
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  pids=$(head_pids)
  [[ -z $pids ]] && { echo "stopped"; exit 0; }
done
for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
sleep 1
echo "stopped (SIGKILL: $(echo $pids | tr "\n" " "))"
