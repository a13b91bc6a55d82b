"""Formats scripts/bench-fanout's JSON lines as a Markdown table.

Per-viewer CPU is (CPU at N - CPU at 0 viewers) / viewers connected, for the
same relay in the same run (shown only when the run has an N = 0 step);
per-viewer memory is (RSS with them connected - RSS just before) / connected.
usage: python3 scripts/fanout_table.py RESULTS.jsonl
"""

import json
import sys


def fmt(v, spec="{:.2f}"):
    return "-" if v is None else spec.format(v)


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    idle = {r["relay"]: r["relay_cpu_pct"] for r in rows if r["viewers"] == 0}
    print("| N | relay | connected | CPU % | CPU % per viewer | RSS MB | KB per viewer "
          "| threads | loss % (max) | received / sent (min) | hop p50 / p99 ms "
          "| ffwhep relay latency p50 / p99 ms | client CPU % |")
    print("|" + "---|" * 13)
    for r in rows:
        n = r["viewers"]
        per_cpu = per_kb = None
        if n and r["connected"]:
            if r["relay"] in idle:  # without an N = 0 row there is no baseline
                per_cpu = (r["relay_cpu_pct"] - idle[r["relay"]]) / r["connected"]
            per_kb = (r["relay_rss_kb"] - r["relay_rss_kb_before"]) / r["connected"]
        lat = "-"
        if r.get("relay_latency_p99_le_ms") is not None:
            # The client reports "beyond the last bound (20 ms)" as 40.
            le = [r[k] for k in ("relay_latency_p50_le_ms", "relay_latency_p99_le_ms")]
            # Beyond the histogram's last bound the client reports twice it.
            top = r.get("relay_latency_top_ms") or 20
            lat = " / ".join(f">{top:g}" if v > top else f"≤{v:g}" for v in le)
        hop = "-"
        if r["hop_p50_ms"] is not None:
            hop = f'{r["hop_p50_ms"]:.2f} / {r["hop_p99_ms"]:.2f}'
        print(f'| {n} | {r["relay"]} | {r["connected"]}/{n} | {r["relay_cpu_pct"]:.1f} '
              f'| {fmt(per_cpu, "{:.3f}")} | {r["relay_rss_kb"] / 1024:.1f} | {fmt(per_kb, "{:.0f}")} '
              f'| {r["relay_threads"]} | {fmt(r["loss_pct_max"] if n else None, "{:.3f}")} '
              f'| {fmt(r["received_vs_reference_min"], "{:.4f}")} | {hop} | {lat} '
              f'| {r["client_cpu_pct"]:.1f} |')


if __name__ == "__main__":
    main(sys.argv[1])
