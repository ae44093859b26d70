#!/usr/bin/env bash
# Orders bench, side by side: the servers of BASE (a git revision) and of this checkout,
# run after one another ROUNDS times, alternating, so that the machine's drift over the
# minutes falls on both. The load generator, pgbench and the bench itself are this
# checkout's; BASE's code only serves (its src/ first on PYTHONPATH).
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
    for side in base head; do
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
    dist = [r["summary"]["distributed"] for r in runs]
    rows[side] = {
        "orders/s": [d["orders_per_second"] for d in dist],
        "p99 ms": [d["server_p99_ms"] for d in dist],
        "servers ms": [
            sum(v for k, v in d["cpu_ms_per_order"].items() if k not in shared) for d in dist
        ],
        "with broker ms": [
            sum(v for k, v in d["cpu_ms_per_order"].items() if k != "load generator")
            for d in dist
        ],
    }
print(f"| side | orders/s (each run) | p99 to CONFIRMED ms | CPU ms per order, servers | with the broker and Redis |")
print("| --- | --- | --- | ---: | ---: |")
for side, label in (("base", base), ("head", head)):
    r = rows[side]
    each = lambda xs: ", ".join(f"{x:.1f}" for x in xs)
    print(
        f"| {side} `{label}` | {statistics.median(r['orders/s']):.1f} ({each(r['orders/s'])}) "
        f"| {statistics.median(r['p99 ms']):.0f} ({each(r['p99 ms'])}) "
        f"| {statistics.median(r['servers ms']):.1f} | {statistics.median(r['with broker ms']):.1f} |"
    )
b, h = rows["base"], rows["head"]
ratio = statistics.median(h["orders/s"]) / statistics.median(b["orders/s"])
cpu = statistics.median(h["with broker ms"]) / statistics.median(b["with broker ms"])
print(f"\nhead / base: orders/s x{ratio:.2f}, CPU per order x{cpu:.2f} (results in {out})")
PY
