#!/usr/bin/env bash
# Start a local Ray head on loopback for development, ready for `ray job submit`.
#
#   cluster/start_local.sh [--port 6379] [--dashboard-port 8265] [--agent-port 52365] [--num-cpus N]
#                          [--temp-dir DIR]
#
# Everything binds to 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray would otherwise pick the eth0
# address) and token auth is off (RAY_AUTH_MODE=disabled), which is fine on loopback; export the same
# RAY_AUTH_MODE before `ray job submit`. Each head gets its own temp dir, so several heads can run side by
# side on different ports (--port, --dashboard-port and --agent-port, the job agent's HTTP port) and
# cluster/stop_local.sh stops exactly this one.
set -euo pipefail

port=6379
dashboard_port=8265
agent_port=52365
num_cpus=$(nproc)
temp_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --dashboard-port) dashboard_port=$2; shift 2 ;;
    --agent-port) agent_port=$2; shift 2 ;;
    --num-cpus) num_cpus=$2; shift 2 ;;
    --temp-dir) temp_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "start_local.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
temp_dir=${temp_dir:-/tmp/ray-intint-$port}

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
ray start --head \
  --port="$port" \
  --num-cpus="$num_cpus" \
  --dashboard-host=127.0.0.1 \
  --dashboard-port="$dashboard_port" \
  --dashboard-agent-listen-port="$agent_port" \
  --temp-dir="$temp_dir" \
  --disable-usage-stats

echo "Ray head up. Submit jobs with:"
echo "  export RAY_AUTH_MODE=disabled RAY_ADDRESS=http://127.0.0.1:$dashboard_port"
echo "  ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/train_finegym.py --shards /abs/path/to/shards"
echo "Stop it with: cluster/stop_local.sh --port $port"
