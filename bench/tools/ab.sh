#!/bin/bash
# Interleaved A/B of lb-bench builds: the only way to see a few ns per
# packet on a shared machine whose speed drifts by more than that between
# runs. Save each build's binary first (cp target/release/lb-bench
# /tmp/lb-bench.NAME), then:
#
#   bench/tools/ab.sh RUNS FLOWS NAME... 
#
# runs `lb-bench pktgen --only bare,lbd-dr,lbd-nat` (FLOWS flows, one
# 0.5 s round) with each build in turn, RUNS times, and prints per build
# the medians of DR's and NAT's share of the bare forwarder and of their
# time per packet above it; then the same from each case's best run
# (highest Mpps): other tenants of the machine only ever slow a run down,
# and on a busy day (bare forwarder runs from 6 to 10.7 Mpps) the medians
# drown in that while the best runs still compare.
set -euo pipefail
runs=$1 flows=$2
shift 2
for _ in $(seq "$runs"); do
  for b in "$@"; do
    echo "RUN $b"
    "/tmp/lb-bench.$b" pktgen --only bare,lbd-dr,lbd-nat --flows "$flows" --few-flows 0 \
      --rounds 1 --seconds 0.5 --out "/tmp/lb-bench-ab" 2>&1 | grep '^| [bl]' || true
  done
done | python3 -c '
import collections, statistics, sys
runs = collections.defaultdict(list)
best = collections.defaultdict(list)
name, rows = None, []
def flush():
    if name and len(rows) == 3:
        bare, dr, nat = (float(r.split("|")[2]) for r in rows)
        runs[name].append((dr / bare, nat / bare, 1e3 / dr - 1e3 / bare, 1e3 / nat - 1e3 / bare))
        best[name].append((bare, dr, nat))
for line in sys.stdin:
    if line.startswith("RUN "):
        flush()
        name, rows = line.split()[1], []
    else:
        rows.append(line)
flush()
for name, v in runs.items():
    m = [statistics.median(x[i] for x in v) for i in range(4)]
    print(f"{name}: {len(v)} runs, DR {m[0]:.3f}x NAT {m[1]:.3f}x of bare, "
          f"DR +{m[2]:.1f} ns NAT +{m[3]:.1f} ns over bare")
for name, v in best.items():
    bare, dr, nat = (max(x[i] for x in v) for i in range(3))
    print(f"{name}: best runs, DR {dr / bare:.3f}x NAT {nat / bare:.3f}x of bare, "
          f"DR +{1e3 / dr - 1e3 / bare:.1f} ns NAT +{1e3 / nat - 1e3 / bare:.1f} ns over bare")
'
