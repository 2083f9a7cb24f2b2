//! Hostile guests against the plugin sandbox, inside a running server: each
//! misbehaviour ends in its typed error within its bound, and `/healthz` keeps
//! answering throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mirrorhost::config::Overrides;
use mirrorhost::plugins::{
    Candidates, Direction, Limits, MirrorContext, PluginError, PluginErrorKind, Registry, Runtime,
    World,
};
use mirrorhost::service::App;

use crate::support::{ADMIN_TOKEN, client, plugin_cache_dir};

/// Whether an error is the one a misbehaviour must produce.
type ErrorCheck = fn(&PluginErrorKind) -> bool;

const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));

fn ctx() -> MirrorContext {
    MirrorContext {
        mirror_id: "1".into(),
        project_id: "acme/widgets".into(),
        direction: Direction::Pull,
        remote_url: "https://example.com/acme/widgets.git".into(),
    }
}

fn refs(count: usize) -> Candidates {
    let oid = "0".repeat(40);
    let mut refs = Candidates::new();
    for i in 0..count {
        refs.push(&format!("refs/heads/b{i}"), &oid, false);
    }
    refs
}

/// Runs the hostile filter with `behaviour` on the blocking pool, as the service
/// does, and returns its error and how long it took.
async fn misbehave(app: &Arc<App>, behaviour: &'static str) -> (PluginError, Duration) {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let result = app.plugins.filter("hostile", &ctx(), behaviour, &refs(3));
        let err = result.expect_err(behaviour);
        (err, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_fail_cleanly_while_the_server_answers() {
    let data_dir = tempfile::tempdir().unwrap();
    let app = Arc::new(crate::app::app(data_dir.path(), ADMIN_TOKEN, Overrides::default()).await);
    app.plugins
        .load("hostile", World::BranchFilter, HOSTILE)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mirrorhost::server::serve(app.clone(), listener, async {
        let _ = stop_rx.await;
    }));

    // Poll /healthz for as long as the hostile calls run.
    let done = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let prober = tokio::spawn({
        let (done, probes) = (done.clone(), probes.clone());
        async move {
            let http = client();
            let mut slowest = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                let resp = http
                    .get(format!("http://{addr}/healthz"))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
                slowest = slowest.max(started.elapsed());
                probes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            slowest
        }
    });
    // The prober's first answer (its client set up, its connection open) comes
    // before any hostile call, so what follows counts probes during them.
    while probes.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let probes_before = probes.load(Ordering::Relaxed);

    // Every misbehaviour must be stopped well within ten time budgets, even on a
    // loaded CI machine; the time budget itself is the bound for the loop.
    let bound = Limits::default().timeout * 10;
    let cases: &[(&str, ErrorCheck)] = &[
        // Either CPU bound may stop it first on a given machine; both are typed.
        ("loop", |k| {
            matches!(
                k,
                PluginErrorKind::Timeout(_) | PluginErrorKind::OutOfFuel(_)
            )
        }),
        ("memory-bomb", |k| {
            matches!(k, PluginErrorKind::MemoryLimit(_))
        }),
        (
            "panic",
            |k| matches!(k, PluginErrorKind::Trap(m) if m.contains("panicked")),
        ),
        ("oversized", |k| {
            matches!(k, PluginErrorKind::OutputTooLarge { .. })
        }),
        ("log-flood", |k| {
            matches!(k, PluginErrorKind::LogLimit { .. })
        }),
        ("stdout-flood", |k| {
            matches!(k, PluginErrorKind::LogLimit { .. })
        }),
        ("stranger", |k| matches!(k, PluginErrorKind::Malformed(_))),
    ];
    for (behaviour, expected) in cases {
        let (err, took) = misbehave(&app, behaviour).await;
        eprintln!("{behaviour}: {err} after {took:?}");
        assert!(expected(&err.kind), "{behaviour}: unexpected error {err}");
        assert_eq!(
            err.plugin, "hostile",
            "{behaviour}: the error names the plugin"
        );
        assert!(took < bound, "{behaviour}: took {took:?}, bound {bound:?}");
    }

    // The host is unaffected: the same plugin still serves a well-behaved call.
    let kept = app
        .plugins
        .filter("hostile", &ctx(), "echo", &refs(3))
        .unwrap();
    assert_eq!(kept.value.len(), 3);

    let during = probes.load(Ordering::Relaxed) - probes_before;
    done.store(true, Ordering::Relaxed);
    let slowest = prober.await.unwrap();
    assert!(
        during >= 2,
        "only {during} health probes answered during the hostile calls"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a health probe took {slowest:?}"
    );
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn a_fuel_budget_stops_a_loop_before_the_clock_does() {
    let limits = Limits {
        fuel: 20_000_000,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let registry = Registry::new(Runtime::new(limits, Some(plugin_cache_dir())).unwrap());
    registry
        .load("hostile", World::BranchFilter, HOSTILE)
        .unwrap();
    let started = Instant::now();
    let err = registry
        .filter("hostile", &ctx(), "loop", &refs(1))
        .unwrap_err();
    assert!(
        matches!(err.kind, PluginErrorKind::OutOfFuel(20_000_000)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn oversized_input_is_refused_before_the_guest_runs() {
    let limits = Limits {
        max_input_bytes: 10_000,
        ..Limits::default()
    };
    let registry = Registry::new(Runtime::new(limits, Some(plugin_cache_dir())).unwrap());
    registry
        .load("hostile", World::BranchFilter, HOSTILE)
        .unwrap();
    let err = registry
        .filter("hostile", &ctx(), "echo", &refs(1_000))
        .unwrap_err();
    assert!(
        matches!(
            err.kind,
            PluginErrorKind::InputTooLarge { limit: 10_000, .. }
        ),
        "{err}"
    );
}

#[test]
fn a_component_of_another_world_is_refused_at_load() {
    let registry =
        Registry::new(Runtime::new(Limits::default(), Some(plugin_cache_dir())).unwrap());
    for world in [World::ConflictStrategy, World::AuthProvider] {
        let err = registry.load("hostile", world, HOSTILE).unwrap_err();
        assert!(
            matches!(err.kind, PluginErrorKind::Invalid { .. }),
            "{world}: {err}"
        );
    }
    assert!(registry.list().is_empty());
}
