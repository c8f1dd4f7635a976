//! `sandman policy bench`: per-hook latency (p50, p99) and peak memory of a policy over a
//! suite's inputs, as the operator would run it (same engine, same limits), compared with a
//! saved baseline. A p50 or peak memory past the baseline by more than `--threshold` percent
//! is a regression, and the command exits non-zero.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::outcome;
use super::suite::{self, Workload};
use super::{PolicyCliError, engine};
use crate::policy::Hook;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The suites whose cases are the inputs.
    #[command(flatten)]
    sources: suite::Sources,
    /// Evaluations per input and hook.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Compare with this baseline (JSON, as `--save` writes it).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// How far past the baseline a p50 or peak memory may go, in percent.
    #[arg(long, default_value_t = 25.0)]
    threshold: f64,
    /// Write the results here as the next baseline.
    #[arg(long)]
    save: Option<PathBuf>,
}

/// One hook's figures. Keys of the baseline file are `<policy>/<hook>`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Figures {
    pub p50_us: f64,
    pub p99_us: f64,
    pub peak_memory_bytes: usize,
    pub evaluations: usize,
}

pub fn run(args: BenchArgs) -> Result<(), PolicyCliError> {
    let engine = engine()?;
    let mut results: BTreeMap<String, Figures> = BTreeMap::new();
    let sources = &args.sources;
    let mut inputs = 0;
    for path in &sources.suites {
        for workload in suite::workloads(
            &engine,
            path,
            &sources.policy,
            sources.wasm.as_deref(),
            sources.key.as_deref(),
        )? {
            inputs += workload.inputs.len();
            results.extend(measure(&workload, args.iterations));
        }
    }
    super::report_compiles(&engine);
    println!("{}", build_note());
    println!(
        "each hook: {} evaluations of each of the suites' {inputs} Sandbox inputs (--iterations), after one warm-up each",
        args.iterations.max(1)
    );
    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>8}",
        "policy/hook", "p50 µs", "p99 µs", "peak memory", "runs"
    );
    for (key, f) in &results {
        println!(
            "{key:<44} {:>10.1} {:>10.1} {:>12} {:>8}",
            f.p50_us,
            f.p99_us,
            crate::policy::limits::format_memory(f.peak_memory_bytes),
            f.evaluations
        );
    }
    if let Some(save) = &args.save {
        let text = serde_json::to_string_pretty(&results)
            .map_err(|e| PolicyCliError::Input(e.to_string()))?;
        std::fs::write(save, text + "\n")
            .map_err(|e| PolicyCliError::Read(save.clone(), e.to_string()))?;
        println!("baseline written to {}", save.display());
    }
    let Some(baseline_path) = &args.baseline else {
        return Ok(());
    };
    let text = std::fs::read_to_string(baseline_path)
        .map_err(|e| PolicyCliError::Read(baseline_path.clone(), e.to_string()))?;
    let baseline: BTreeMap<String, Figures> = serde_json::from_str(&text)
        .map_err(|e| PolicyCliError::Parse(baseline_path.clone(), e.to_string()))?;
    let regressions = regressions(&baseline, &results, args.threshold);
    if regressions.is_empty() {
        println!(
            "no regression past {}% of {}",
            args.threshold,
            baseline_path.display()
        );
        return Ok(());
    }
    for line in &regressions {
        println!("REGRESSION  {line}");
    }
    Err(PolicyCliError::Regressed(regressions.len()))
}

/// Each exported hook of the workload's policy, over its inputs.
/// Which build measured: a debug build's figures say little about the operator's, which is
/// always a release build.
fn build_note() -> &'static str {
    if cfg!(debug_assertions) {
        "WARNING: a debug build of sandman measured these; the operator runs a release build, so build sandman with --release for figures that mean anything"
    } else {
        "build: release (as the operator runs)"
    }
}

fn measure(workload: &Workload, iterations: usize) -> Vec<(String, Figures)> {
    let policy = &workload.policy;
    let mut figures = Vec::new();
    // Suites hold Sandboxes: the Sandbox hooks.
    for hook in policy.hooks().into_iter().filter(|h| *h != Hook::Pool) {
        if workload.inputs.is_empty() {
            continue;
        }
        // Warm: the first calls instantiate and fill caches, which the operator pays once.
        for input in &workload.inputs {
            let _ = outcome::evaluate(policy, hook, input);
        }
        let mut micros = Vec::with_capacity(iterations * workload.inputs.len());
        for _ in 0..iterations.max(1) {
            for input in &workload.inputs {
                let started = Instant::now();
                let _ = outcome::evaluate(policy, hook, input);
                micros.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        micros.sort_by(f64::total_cmp);
        figures.push((
            format!("{}/{}", policy.name(), hook.name()),
            Figures {
                p50_us: percentile(&micros, 0.50),
                p99_us: percentile(&micros, 0.99),
                peak_memory_bytes: policy.peak_memory_bytes(),
                evaluations: micros.len(),
            },
        ));
    }
    figures
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What got worse than `baseline` by more than `threshold` percent: p50 and peak memory (p99
/// is reported, but on a shared machine it is too noisy to fail a build on).
pub fn regressions(
    baseline: &BTreeMap<String, Figures>,
    now: &BTreeMap<String, Figures>,
    threshold: f64,
) -> Vec<String> {
    let factor = 1.0 + threshold / 100.0;
    let mut found = Vec::new();
    for (key, was) in baseline {
        let Some(is) = now.get(key) else {
            found.push(format!("{key}: in the baseline, not measured now"));
            continue;
        };
        if is.p50_us > was.p50_us * factor {
            found.push(format!(
                "{key}: p50 {:.1} µs, baseline {:.1} µs (+{:.0}%)",
                is.p50_us,
                was.p50_us,
                (is.p50_us / was.p50_us.max(f64::MIN_POSITIVE) - 1.0) * 100.0
            ));
        }
        if is.peak_memory_bytes as f64 > was.peak_memory_bytes as f64 * factor {
            found.push(format!(
                "{key}: peak memory {} bytes, baseline {} bytes",
                is.peak_memory_bytes, was.peak_memory_bytes
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(p50: f64, memory: usize) -> Figures {
        Figures {
            p50_us: p50,
            p99_us: p50 * 2.0,
            peak_memory_bytes: memory,
            evaluations: 10,
        }
    }

    #[test]
    fn only_changes_past_the_threshold_are_regressions() {
        let baseline = BTreeMap::from([("p/lifecycle".to_string(), figures(10.0, 1000))]);
        let slightly = BTreeMap::from([("p/lifecycle".to_string(), figures(12.0, 1100))]);
        assert!(regressions(&baseline, &slightly, 25.0).is_empty());
        let slower = BTreeMap::from([("p/lifecycle".to_string(), figures(13.0, 1000))]);
        assert_eq!(regressions(&baseline, &slower, 25.0).len(), 1);
        let fatter = BTreeMap::from([("p/lifecycle".to_string(), figures(10.0, 2000))]);
        assert!(regressions(&baseline, &fatter, 25.0)[0].contains("peak memory"));
        assert!(regressions(&baseline, &BTreeMap::new(), 25.0)[0].contains("not measured"));
    }
}
