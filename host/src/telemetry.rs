//! Prometheus metrics. Counters and histograms are recorded where things happen
//! (runs in `jobs`, plugin calls in `plugins`, deliveries in `webhooks`); the
//! queue gauges are read from the database at scrape time, so they cannot drift.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{self, Direction, RunOutcome, Store, StoreError};

pub const RUNS: &str = "mirrorhost_runs_total";
pub const RUN_DURATION: &str = "mirrorhost_run_duration_seconds";
pub const BYTES: &str = "mirrorhost_bytes_transferred_total";
pub const QUEUE_DEPTH: &str = "mirrorhost_queue_depth";
pub const RUNNING: &str = "mirrorhost_running_jobs";
pub const PLUGIN_CALLS: &str = "mirrorhost_plugin_calls_total";
pub const PLUGIN_ERRORS: &str = "mirrorhost_plugin_errors_total";
pub const PLUGIN_FUEL: &str = "mirrorhost_plugin_fuel_consumed_total";
pub const WEBHOOKS: &str = "mirrorhost_webhook_deliveries_total";

/// Run durations span a no-op fetch (tens of ms) to a first clone (minutes).
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// The process-wide recorder's handle. `metrics` has one global recorder, so
/// every service built in this process (tests build several) shares it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(RUN_DURATION.into()), DURATION_BUCKETS)
                .unwrap_or_else(|_| unreachable!("the bucket list is not empty"))
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            // Descriptions go to the installed recorder, so after installing it.
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(RUNS, "Finished runs by direction and result.");
    metrics::describe_histogram!(
        RUN_DURATION,
        metrics::Unit::Seconds,
        "Run durations by direction."
    );
    metrics::describe_counter!(BYTES, metrics::Unit::Bytes, "Bytes fetched or pushed.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting to start.");
    metrics::describe_gauge!(RUNNING, "Jobs running now.");
    metrics::describe_counter!(PLUGIN_CALLS, "Plugin calls by plugin and result.");
    metrics::describe_counter!(PLUGIN_ERRORS, "Failed plugin calls by plugin and cause.");
    metrics::describe_counter!(PLUGIN_FUEL, "Fuel consumed by successful plugin calls.");
    metrics::describe_counter!(WEBHOOKS, "Webhook deliveries by provider and result.");
}

/// Counts a finished run with the duration and bytes its record holds, so the
/// histogram and the run history agree.
pub fn run_finished(direction: Direction, outcome: &RunOutcome) {
    let direction = direction.as_str();
    let result = match (outcome.cancelled, outcome.succeeded) {
        (true, _) => "cancelled",
        (false, true) => "succeeded",
        (false, false) => "failed",
    };
    metrics::counter!(RUNS, "direction" => direction, "result" => result).increment(1);
    metrics::histogram!(RUN_DURATION, "direction" => direction)
        .record(outcome.duration_ms as f64 / 1000.0);
    metrics::counter!(BYTES, "direction" => direction)
        .increment(outcome.bytes_transferred.unsigned_abs());
}

/// `Ok(fuel used)` or `Err(error code)`.
pub fn plugin_called(plugin: &str, result: Result<u64, &'static str>) {
    let plugin = plugin.to_string();
    match result {
        Ok(fuel) => {
            metrics::counter!(PLUGIN_CALLS, "plugin" => plugin.clone(), "result" => "ok")
                .increment(1);
            metrics::counter!(PLUGIN_FUEL, "plugin" => plugin).increment(fuel);
        }
        Err(code) => {
            metrics::counter!(PLUGIN_CALLS, "plugin" => plugin.clone(), "result" => "error")
                .increment(1);
            metrics::counter!(PLUGIN_ERRORS, "plugin" => plugin, "kind" => code).increment(1);
        }
    }
}

pub fn webhook_delivery(provider: &'static str, result: &'static str) {
    metrics::counter!(WEBHOOKS, "provider" => provider, "result" => result).increment(1);
}

/// The scrape: queue gauges from the database, then the text format.
pub fn render(handle: &PrometheusHandle, store: &Store) -> Result<String, StoreError> {
    let (pending, running) = store.with(|c| store::runs::job_counts(c))?;
    metrics::gauge!(QUEUE_DEPTH).set(pending as f64);
    metrics::gauge!(RUNNING).set(running as f64);
    Ok(handle.render())
}
