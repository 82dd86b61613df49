//! The output: a table per in-flight level, and with `--json` one JSON
//! object per measurement (which `scripts/bench-report.py` reads).

use tonic::Code;

use crate::cli::Args;
use crate::measure::Measurement;
use crate::scenarios::Scenario;

pub fn baseline(results: &[Measurement]) -> Option<&Measurement> {
    results
        .iter()
        .find(|m| m.scenario == Scenario::Health && m.ok > 0)
}

pub fn ratio(value: f64, base: Option<f64>) -> Option<f64> {
    base.filter(|b| *b > 0.0 && b.is_finite())
        .map(|b| value / b)
        .filter(|r| r.is_finite())
}

pub fn print_table(args: &Args, in_flight: u32, results: &[Measurement]) {
    let base = baseline(results);
    println!();
    println!(
        "in flight {in_flight} · {} connection(s) · {}s measured after {}s warm-up",
        args.connections, args.duration_secs, args.warmup_secs
    );
    let with_cpu = results.iter().any(|m| m.cpu.is_some());
    let mut header = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>9}",
        "scenario", "req/s", "p50 µs", "p99 µs", "ok", "errors", "req/s ×hc", "p99 ×hc"
    );
    if with_cpu {
        header.push_str(&format!(
            " {:>9} {:>8} {:>8}",
            "cpu busy", "loadgen", "server"
        ));
    }
    println!("{header}");
    for m in results {
        let rps_ratio = ratio(m.req_per_s, base.map(|b| b.req_per_s));
        let p99_ratio = ratio(m.p99_us, base.map(|b| b.p99_us));
        let mut line = format!(
            "{:<10} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>8} {:>10} {:>9}",
            m.scenario.name(),
            m.req_per_s,
            m.p50_us,
            m.p99_us,
            m.ok,
            m.errors.total(),
            fmt_ratio(rps_ratio),
            fmt_ratio(p99_ratio),
        );
        if let Some(cpu) = &m.cpu {
            line.push_str(&format!(
                " {:>9} {:>8} {:>8}",
                format!("{:.2}/{}", cpu.busy_cores, cpu.cores),
                format!("{:.2}", cpu.loadgen_cores),
                cpu.server_cores
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
            ));
        }
        println!("{line}");
    }
    for m in results {
        for (name, p50, p99) in &m.parts {
            println!(
                "  {} per call: {name} p50 {p50:.0} µs, p99 {p99:.0} µs",
                m.scenario.name()
            );
        }
        if m.unchanged > 0 {
            println!(
                "  {}: {} call(s) changed nothing (a concurrent call had set that role \
                 first); not counted as ok",
                m.scenario.name(),
                m.unchanged
            );
        }
        for error in m.errors.describe() {
            println!("  errors of {}: {error}", m.scenario.name());
        }
    }
    let rss: Vec<String> = results
        .iter()
        .filter_map(|m| {
            m.cpu
                .as_ref()
                .and_then(|c| c.server_rss_kib)
                .map(|kib| format!("{} {:.1} MiB", m.scenario.name(), kib as f64 / 1024.0))
        })
        .collect();
    if !rss.is_empty() {
        println!("  server RSS after each: {}", rss.join(", "));
    }
    let hit_rates: Vec<String> = results
        .iter()
        .filter_map(|m| {
            let rate = m.user_cache_hit_rate?;
            Some(format!("{} {:.1} %", m.scenario.name(), rate * 100.0))
        })
        .collect();
    if !hit_rates.is_empty() {
        println!("  users cache hit rate: {}", hit_rates.join(", "));
    }
    if with_cpu {
        println!(
            "  (×hc = ratio to health at this level; cpu = cores busy machine-wide, \
             cores used by loadgen and by the server)"
        );
    } else {
        println!("  (×hc = ratio to health at this level)");
    }
}

pub fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

pub fn print_json(args: &Args, results: &[Measurement]) {
    let base = baseline(results);
    for m in results {
        let errors: serde_json::Map<String, serde_json::Value> = m
            .errors
            .0
            .iter()
            .map(|(code, (count, _))| (format!("{:?}", Code::from(*code)), (*count).into()))
            .collect();
        let parts: serde_json::Map<String, serde_json::Value> = m
            .parts
            .iter()
            .map(|(name, p50, p99)| {
                let part = serde_json::json!({"p50_us": finite(*p50), "p99_us": finite(*p99)});
                ((*name).to_owned(), part)
            })
            .collect();
        let line = serde_json::json!({
            "scenario": m.scenario.name(),
            "in_flight": m.in_flight,
            "connections": args.connections,
            "seconds": m.seconds,
            "ok": m.ok,
            "errors": m.errors.total(),
            "error_codes": errors,
            "req_per_s": finite(m.req_per_s),
            "p50_us": finite(m.p50_us),
            "p99_us": finite(m.p99_us),
            "max_us": finite(m.max_us),
            "req_per_s_ratio": ratio(m.req_per_s, base.map(|b| b.req_per_s)),
            "p99_ratio": ratio(m.p99_us, base.map(|b| b.p99_us)),
            "p50_ratio": ratio(m.p50_us, base.map(|b| b.p50_us)),
            "unchanged": m.unchanged,
            "parts": parts,
            "cpu_cores": m.cpu.as_ref().map(|c| c.cores),
            "cpu_busy_cores": m.cpu.as_ref().map(|c| c.busy_cores),
            "loadgen_cores": m.cpu.as_ref().map(|c| c.loadgen_cores),
            "server_cores": m.cpu.as_ref().and_then(|c| c.server_cores),
            "server_rss_kib": m.cpu.as_ref().and_then(|c| c.server_rss_kib),
            "user_cache_hit_rate": m.user_cache_hit_rate.and_then(finite),
        });
        println!("{line}");
    }
}

pub fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}
