#!/usr/bin/env bash
# Orders bench, side by side: the servers of BASE (a git revision) and of this checkout,
# run after one another ROUNDS times, alternating which goes first, so that the
# machine's drift over the minutes falls on both. The load generator, pgbench and the
# bench itself are this checkout's; BASE's code only serves (its src/ first on
# PYTHONPATH).
#
#   bench/ab_orders.sh BASE [ROUNDS] [OUT_DIR]     e.g. bench/ab_orders.sh cf8ca52 2
#
# Needs what bench/run_orders.py needs (bench/README.md). Schema changes between the
# two are not supported: both run on databases migrated by the serving code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${1:?usage: bench/ab_orders.sh BASE [ROUNDS] [OUT_DIR]}"
ROUNDS="${2:-2}"
OUT="${3:-$(mktemp -d -t panthera-ab-XXXXXX)}"
mkdir -p "$OUT"
TREE="$(mktemp -d -t panthera-ab-base-XXXXXX)"
trap 'git -C "$ROOT" worktree remove --force "$TREE" >/dev/null 2>&1 || rm -rf "$TREE"' EXIT
git -C "$ROOT" worktree add --detach --quiet "$TREE" "$BASE"

cd "$ROOT"
for round in $(seq 1 "$ROUNDS"); do
    # base, head, then head, base: a machine that speeds up or slows down over the
    # minutes favours neither side.
    sides="base head"
    if [ $((round % 2)) -eq 0 ]; then sides="head base"; fi
    for side in $sides; do
        name="$side-$round"
        echo "ab: $name" >&2
        if [ "$side" = base ]; then
            export PYTHONPATH="$TREE/src${PYTHONPATH:+:$PYTHONPATH}"
        else
            unset PYTHONPATH
        fi
        flock /tmp/panthera-bench.lock .venv/bin/python bench/run_orders.py --skip-embedded \
            --rounds 1 --out "$OUT/$name.json" --markdown "$OUT/$name.md" >"$OUT/$name.log" 2>&1
    done
done
unset PYTHONPATH

.venv/bin/python - "$OUT" "$BASE" "$(git rev-parse --short HEAD)" <<'PY'
import json, statistics, sys
from pathlib import Path

out, base, head = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
shared = {"load generator", "rabbitmq", "redis"}
rows = {}
for side in ("base", "head"):
    runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{side}-*.json"))]
    rows[side] = {key: [] for key in ("orders/s", "p99", "servers", "with broker", "units")}
    for run in runs:
        dist, pgbench = run["summary"]["distributed"], run["summary"]["pgbench"]
        cpu = dist["cpu_ms_per_order"]
        with_broker = sum(v for k, v in cpu.items() if k != "load generator")
        rows[side]["orders/s"].append(dist["orders_per_second"])
        rows[side]["p99"].append(dist["server_p99_ms"])
        rows[side]["servers"].append(sum(v for k, v in cpu.items() if k not in shared))
        rows[side]["with broker"].append(with_broker)
        # The machine's speed of the moment: PostgreSQL's CPU per pgbench transaction
        # in the same run. CPU per order in those units compares across runs.
        rows[side]["units"].append(with_broker / pgbench["postgres_cpu_ms_per_tx"])


def each(xs):
    return ", ".join(f"{x:.1f}" for x in xs)


median = statistics.median
print(
    "| side | orders/s (each run) | p99 to CONFIRMED ms | CPU ms per order, servers "
    "| with the broker and Redis | the same in pgbench transactions (each run) |"
)
print("| --- | --- | --- | ---: | ---: | --- |")
for side, label in (("base", base), ("head", head)):
    r = rows[side]
    print(
        f"| {side} `{label}` | {median(r['orders/s']):.1f} ({each(r['orders/s'])}) "
        f"| {median(r['p99']):.0f} ({each(r['p99'])}) | {median(r['servers']):.1f} "
        f"| {median(r['with broker']):.1f} | {median(r['units']):.1f} ({each(r['units'])}) |"
    )
b, h = rows["base"], rows["head"]
print(
    f"\nhead / base: orders/s x{median(h['orders/s']) / median(b['orders/s']):.2f}, "
    f"CPU per order x{median(h['with broker']) / median(b['with broker']):.2f}, "
    f"in pgbench transactions x{median(h['units']) / median(b['units']):.2f} (results in {out})"
)
PY
