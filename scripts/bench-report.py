#!/usr/bin/env python3
"""Runs scripts/bench.sh several times and prints, per scenario, the median
(min-max) of req/s, its ratio to the health baseline of the same run, p99 and
p50 and their ratios, as a Markdown table; then the per-call latencies of
many-call scenarios (invite_cycle) and any errors. Extra arguments go to
loadgen; the environment (BENCH_REPLICAS, ...) goes to bench.sh.

    scripts/bench-report.py --runs 3 -- --in-flight 64 --scenarios health,get_user

With --usermgmt FILE given more than once, the server builds take turns
(run 1 of each, then run 2 of each, ...; bench.sh's BENCH_USERMGMT), each
is reported on its own, and then each against the first, per scenario, as
the ratio of their medians' × health figures (req/s and p50).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run_once(loadgen_args, usermgmt=None):
    env = dict(os.environ)
    if usermgmt:
        env["BENCH_USERMGMT"] = usermgmt
    proc = subprocess.run(
        ["scripts/bench.sh", "--json", *loadgen_args],
        capture_output=True, text=True, env=env,
    )
    # Pass the servers' and loadgen's messages on (warnings included),
    # without loadgen's progress lines.
    for line in proc.stderr.splitlines():
        if not line.startswith("  measuring "):
            print(line, file=sys.stderr)
    proc.check_returncode()
    out = proc.stdout
    rows, startup = [], None
    for line in out.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
        elif line.startswith("startup:"):
            startup = int(line.split()[2])
    return rows, startup


def ratio(value):
    """Two decimals, or two significant digits below 0.1 (a login is
    thousands of times slower than a health check)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--usermgmt", action="append", default=[],
                        help="a server binary; given several times, the builds take turns")
    parser.add_argument("loadgen_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = [a for a in args.loadgen_args if a != "--"]
    builds = [os.path.abspath(b) for b in args.usermgmt] or [None]
    runs = {build: [] for build in builds}
    for n in range(args.runs):
        for build in builds:
            label = f" of {build}" if build else ""
            print(f"run {n + 1}/{args.runs}{label} …", file=sys.stderr)
            runs[build].append(run_once(extra, build))
    for build in builds:
        if build:
            print(f"\n## {build}\n")
        report(runs[build])
    if len(builds) > 1:
        compare(builds, runs)


def medians(runs):
    """Per (in flight, scenario): the medians of req/s, p50 and p99, and of
    their ratios to health."""
    pooled = {}
    for rows, _ in runs:
        for row in rows:
            pooled.setdefault((row["in_flight"], row["scenario"]), []).append(row)

    def median(rows, field):
        values = [r.get(field) for r in rows if r.get(field) is not None]
        return statistics.median(values) if values else None

    return {key: {field: median(rows, field) for field in
                  ("req_per_s", "req_per_s_ratio", "p50_us", "p50_ratio", "p99_us", "p99_ratio")}
            for key, rows in pooled.items()}


def compare(builds, runs):
    first = medians(runs[builds[0]])
    print(f"\n## Each build against the first ({builds[0]})\n")
    print("| build | in flight | scenario | req/s ×health: first → this | this ÷ first "
          "| p50 ×health: first → this | this ÷ first | p99 ×health: first → this |")
    print("|---|---|---|---|---|---|---|---|")

    def fmt(value):
        return "-" if value is None else ratio(value)

    def quotient(a, b):
        return None if a is None or b is None or a == 0 else b / a

    for build in builds[1:]:
        this = medians(runs[build])
        for key, base in first.items():
            other = this.get(key)
            if other is None:
                continue
            in_flight, scenario = key
            print(f"| {os.path.basename(os.path.dirname(build)) or build} | {in_flight} | {scenario} "
                  f"| {fmt(base['req_per_s_ratio'])} → {fmt(other['req_per_s_ratio'])} "
                  f"| {fmt(quotient(base['req_per_s_ratio'], other['req_per_s_ratio']))} "
                  f"| {fmt(base['p50_ratio'])} → {fmt(other['p50_ratio'])} "
                  f"| {fmt(quotient(base['p50_ratio'], other['p50_ratio']))} "
                  f"| {fmt(base['p99_ratio'])} → {fmt(other['p99_ratio'])} |")


def report(runs):
    keys = []
    for rows, _ in runs:
        for row in rows:
            key = (row["in_flight"], row["scenario"])
            if key not in keys:
                keys.append(key)
    print("| in flight | scenario | req/s | × health req/s | p99 µs | × health p99 | server RSS MiB "
          "| p50 µs | × health p50 | users cache hits |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for in_flight, scenario in keys:
        rows = [r for rs, _ in runs for r in rs if (r["in_flight"], r["scenario"]) == (in_flight, scenario)]
        rss = [r["server_rss_kib"] / 1024 if r.get("server_rss_kib") else None for r in rows]
        print(
            f"| {in_flight} | {scenario} | {spread([r['req_per_s'] for r in rows], lambda v: f'{v:.0f}')} "
            f"| {spread([r['req_per_s_ratio'] for r in rows], ratio)} "
            f"| {spread([r['p99_us'] for r in rows], lambda v: f'{v:.0f}')} "
            f"| {spread([r['p99_ratio'] for r in rows], ratio)} "
            f"| {spread(rss, lambda v: f'{v:.0f}')} "
            f"| {spread([r['p50_us'] for r in rows], lambda v: f'{v:.0f}')} "
            f"| {spread([r.get('p50_ratio') for r in rows], ratio)} "
            f"| {spread([r.get('user_cache_hit_rate') for r in rows], lambda v: f'{v * 100:.1f} %')} |"
        )
    print("\n| in flight | scenario | server CPU µs per call | loadgen CPU µs per call |")
    print("|---|---|---|---|")
    for in_flight, scenario in keys:
        rows = [r for rs, _ in runs for r in rs if (r["in_flight"], r["scenario"]) == (in_flight, scenario)]

        def per_call(field):
            return [r[field] / r["req_per_s"] * 1e6 if r.get(field) and r["req_per_s"] else None
                    for r in rows]

        print(f"| {in_flight} | {scenario} | {spread(per_call('server_cores'), lambda v: f'{v:.1f}')} "
              f"| {spread(per_call('loadgen_cores'), lambda v: f'{v:.1f}')} |")
    notes = []
    for in_flight, scenario in keys:
        rows = [r for rs, _ in runs for r in rs if (r["in_flight"], r["scenario"]) == (in_flight, scenario)]
        for part in rows[0].get("parts") or {}:
            parts = [r["parts"][part] for r in rows]
            notes.append(
                f"| {in_flight} | {scenario} | {part} "
                f"| {spread([p['p50_us'] for p in parts], lambda v: f'{v:.0f}')} "
                f"| {spread([p['p99_us'] for p in parts], lambda v: f'{v:.0f}')} |"
            )
    if notes:
        print("\n| in flight | scenario | call | p50 µs | p99 µs |")
        print("|---|---|---|---|---|")
        print("\n".join(notes))
    for in_flight, scenario in keys:
        rows = [r for rs, _ in runs for r in rs if (r["in_flight"], r["scenario"]) == (in_flight, scenario)]
        errors = [r["errors"] for r in rows]
        unchanged = [r.get("unchanged", 0) for r in rows]
        if any(errors) or any(unchanged):
            codes = {}
            for r in rows:
                for code, count in r["error_codes"].items():
                    codes[code] = codes.get(code, 0) + count
            codes = f" {codes}" if codes else ""
            print(f"\n{scenario} at {in_flight} in flight: errors per run {errors}{codes}, "
                  f"unchanged (not ok) per run {unchanged}")
    startups = [s for _, s in runs if s is not None]
    if startups:
        print(f"\nstartup to SERVING: {spread(startups, lambda v: f'{v:.0f}')} ms")


if __name__ == "__main__":
    main()
