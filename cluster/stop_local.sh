#!/usr/bin/env bash
# Stop the local Ray head started by cluster/start_local.sh, and only that one.
#
#   cluster/stop_local.sh [--port 6379] [--temp-dir DIR] [--grace 10]
#
# `ray stop` would end every Ray process of this user on the machine (other heads, other people's local
# runs). Instead this finds the processes whose command line names this head's temp dir (GCS, raylet,
# dashboard, monitors) and everything they started (agents, workers, job drivers), and stops them in the
# order `ray stop` uses: the raylet first (its agents and workers exit with it), then the rest, the GCS
# last, each step SIGTERM and a wait of at most --grace seconds. Stopping the GCS together with the others
# would leave them retrying to reach it until the grace period ends; SIGKILL is only for what is still
# there after the last step.
set -euo pipefail

port=6379
temp_dir=""
grace=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --temp-dir) temp_dir=$2; shift 2 ;;
    --grace) grace=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "stop_local.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
temp_dir=${temp_dir:-/tmp/ray-intint-$port}

# A process's command line, words joined by spaces ("" once it is gone); no subprocess per process.
cmdline() {
  local -a words=()
  { mapfile -d '' -t words < "/proc/$1/cmdline"; } 2>/dev/null || true
  echo "${words[*]}"
}

# The head's processes: those naming its temp dir, and their descendants (found through /proc/*/stat).
head_pids() {
  local pid stat rest ppid found=" " added=1
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [[ $pid == "$$" ]] && continue
    [[ $(cmdline "$pid") == *"$temp_dir/"* ]] && found+="$pid "
  done
  [[ $found == " " ]] && return 0
  while (( added )); do
    added=0
    for dir in /proc/[0-9]*; do
      pid=${dir#/proc/}
      [[ $found == *" $pid "* ]] && continue
      read -r stat < "$dir/stat" 2>/dev/null || continue
      rest=${stat##*) }  # "<state> <ppid> ..." after "<pid> (<comm>) "
      ppid=${rest#* }; ppid=${ppid%% *}
      if [[ $found == *" $ppid "* ]]; then found+="$pid "; added=1; fi
    done
  done
  echo $found
}

alive() { local pid out=""; for pid in "$@"; do [[ -d /proc/$pid ]] && out+="$pid "; done; echo $out; }

# SIGTERM the given pids, then wait until they are gone or --grace seconds have passed.
stop_step() {
  local pids deadline
  pids=$(alive "$@")
  [[ -z $pids ]] && return 0
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$(( $(date +%s%N) + grace * 1000000000 ))
  while [[ -n $(alive $pids) ]] && (( $(date +%s%N) < deadline )); do sleep 0.1; done
}

pids=$(head_pids)
if [[ -z $pids ]]; then
  echo "no Ray head found for $temp_dir"
  exit 0
fi
echo "stopping Ray head ($temp_dir): pids $pids"
raylets="" gcs="" others=""
for pid in $pids; do
  case "$(cmdline "$pid")" in
    */raylet/raylet\ *) raylets+="$pid " ;;
    */gcs/gcs_server\ *) gcs+="$pid " ;;
    *) others+="$pid " ;;
  esac
done
stop_step $raylets
stop_step $others
stop_step $gcs
left=$(alive $pids)
if [[ -z $left ]]; then
  echo "stopped"
  exit 0
fi
for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
echo "stopped (SIGKILL after ${grace} s: $left)"
