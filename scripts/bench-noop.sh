#!/usr/bin/env bash
# What a cron run costs when nothing changed, with 20 connections, for a site of
# 0 and of N issues (default 1000): the cost must grow with the connections, not
# with the issues. Prints milliseconds per no-op `ferry sync` and the ratio.
#
#   scripts/bench-noop.sh [ISSUES] [FERRY]     (FERRY: the binary; default: release build)
set -euo pipefail
shopt -s inherit_errexit
issues=${1:-1000}
ferry=${2:-$(cd "$(dirname "$0")/.." && pwd)/target/release/ferry}
[ -x "$ferry" ] || { echo "build first: cargo build --release (or pass the binary)"; exit 2; }
ferry=$(realpath "$ferry")
peers=20 runs=10
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 FERRY_USER=bench

world() { # $1: issues at the hub
  local dir; dir=$(mktemp -d)
  git init -q --bare "$dir/exchange.git"
  mkdir "$dir/hub" && (cd "$dir/hub" && "$ferry" -q init --site hub)
  for i in $(seq -w 1 $peers); do
    mkdir "$dir/p$i"
    (cd "$dir/p$i" && "$ferry" -q init --site "p$i" &&
      "$ferry" -q connection add hub --channel ../exchange.git --project "P$i=HUB")
    (cd "$dir/hub" && "$ferry" -q connection add "p$i" --channel ../exchange.git \
      --project "HUB=P$i" --query "labels = team$i")
    (cd "$dir/hub" && "$ferry" -q connection trust "p$i" "$(cd "$dir/p$i" && "$ferry" key show)")
    (cd "$dir/p$i" && "$ferry" -q connection trust hub "$(cd "$dir/hub" && "$ferry" key show)")
  done
  if [ "$1" -gt 0 ]; then (cd "$dir/hub" && "$ferry" -q tracker generate "$1" --project HUB); fi
  (cd "$dir/hub" && "$ferry" -q sync)
  for i in $(seq -w 1 $peers); do (cd "$dir/p$i" && "$ferry" -q sync); done
  (cd "$dir/hub" && "$ferry" -q sync)
  echo "$dir"
}

per_run_ms() { # $1: world
  local start end
  start=$(date +%s%N)
  for _ in $(seq $runs); do (cd "$1/hub" && "$ferry" -q sync); done
  end=$(date +%s%N)
  echo $(( (end - start) / runs / 1000000 ))
}

empty=$(world 0)
full=$(world "$issues")
a=$(per_run_ms "$empty")
b=$(per_run_ms "$full")
echo "no-op sync, $peers connections, 0 issues:      $a ms"
echo "no-op sync, $peers connections, $issues issues: $b ms"
awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio: %.2f (1.00 means the issues cost nothing)\n", (a > 0 ? b / a : 0) }'
rm -rf "$empty" "$full"
