//! The built-in plugins, loaded from the embedded components and called through
//! the runtime exactly as the sync engine calls them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;

/// One registry per test binary; compiled components are cached next to the build
/// output so later runs skip cranelift.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let cache = Path::new(env!("OUT_DIR")).join("test-plugin-cache");
        let runtime = Runtime::new(Limits::default(), Some(cache)).unwrap();
        Registry::with_builtins(runtime).unwrap()
    })
}

fn ctx() -> MirrorContext {
    MirrorContext {
        mirror_id: "7".into(),
        project_id: "acme/widgets".into(),
        direction: Direction::Pull,
        remote_url: "https://github.com/acme/widgets.git".into(),
    }
}

fn candidates(names: &[&str], protected: &[&str]) -> Candidates {
    let oid = "a".repeat(40);
    names
        .iter()
        .map(|n| (*n, oid.as_str(), protected.contains(n)))
        .collect()
}

const REFS: &[&str] = &[
    "refs/heads/main",
    "refs/heads/release/1.0",
    "refs/heads/feature/x-wip",
    "refs/tags/v1.0",
    "refs/tags/nightly",
    "refs/pull/1/head",
];

/// The kept names, sorted, so expectations do not depend on answer order.
fn filter(name: &str, config: &str, protected: &[&str]) -> Result<Vec<String>, PluginError> {
    registry()
        .filter(name, &ctx(), config, &candidates(REFS, protected))
        .map(|o| {
            let mut names = o.value;
            names.sort();
            names
        })
}

#[test]
fn the_nine_builtins_are_listed_with_their_worlds() {
    let listed = registry().list();
    let mut names: Vec<(&str, World)> = listed.iter().map(|p| (p.name.as_str(), p.world)).collect();
    names.sort();
    let mut expected: Vec<(&str, World)> = BUILTINS.iter().map(|b| (b.name, b.world)).collect();
    expected.sort();
    assert_eq!(names, expected);
    for meta in listed {
        assert!(meta.builtin);
        assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(meta.sha256.len(), 64);
    }
}

#[test]
fn regex_filter_includes_and_excludes_branches_and_tags() {
    let kept = filter(
        "regex-filter",
        r#"{"include": ["^main$", "^release/", "^v\\d"], "exclude": "-wip$"}"#,
        &[],
    )
    .unwrap();
    assert_eq!(
        kept,
        [
            "refs/heads/main",
            "refs/heads/release/1.0",
            "refs/tags/v1.0"
        ]
    );

    let kept = filter("regex-filter", r#"{"exclude": ["wip", "^nightly$"]}"#, &[]).unwrap();
    assert_eq!(
        kept,
        [
            "refs/heads/main",
            "refs/heads/release/1.0",
            "refs/tags/v1.0"
        ]
    );

    let kept = filter(
        "regex-filter",
        r#"{"include": "^main$", "tags": "all"}"#,
        &[],
    )
    .unwrap();
    assert_eq!(
        kept,
        ["refs/heads/main", "refs/tags/nightly", "refs/tags/v1.0"]
    );

    let kept = filter("regex-filter", r#"{"tags": "none"}"#, &[]).unwrap();
    assert_eq!(
        kept,
        [
            "refs/heads/feature/x-wip",
            "refs/heads/main",
            "refs/heads/release/1.0"
        ]
    );
}

#[test]
fn regex_filter_with_no_config_keeps_branches_and_tags_only() {
    let kept = filter("regex-filter", "", &[]).unwrap();
    let mut expected = REFS[..5].to_vec();
    expected.sort_unstable();
    assert_eq!(kept, expected);
}

#[test]
fn regex_filter_refuses_a_bad_pattern_by_name() {
    let err = registry()
        .validate_config(
            "regex-filter",
            World::BranchFilter,
            r#"{"include": ["ok", "(unclosed"]}"#,
        )
        .unwrap_err();
    let PluginErrorKind::Rejected(message) = &err.kind else {
        panic!("{err}");
    };
    assert!(
        message.contains("include") && message.contains("(unclosed"),
        "{message}"
    );

    let err = registry()
        .validate_config("regex-filter", World::BranchFilter, r#"{"includes": "x"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("includes"), "{err}");
    registry()
        .validate_config(
            "regex-filter",
            World::BranchFilter,
            r#"{"include": "^main$"}"#,
        )
        .unwrap();
}

#[test]
fn protected_only_keeps_protected_branches_and_nothing_without_them() {
    assert_eq!(
        filter("protected-only", "", &[]).unwrap(),
        Vec::<String>::new()
    );
    let kept = filter(
        "protected-only",
        "",
        &["refs/heads/main", "refs/heads/release/1.0"],
    )
    .unwrap();
    assert_eq!(kept, ["refs/heads/main", "refs/heads/release/1.0"]);
    let kept = filter(
        "protected-only",
        r#"{"include_tags": true}"#,
        &["refs/heads/main"],
    )
    .unwrap();
    assert_eq!(
        kept,
        ["refs/heads/main", "refs/tags/nightly", "refs/tags/v1.0"]
    );
}

fn diverged() -> DivergedRef {
    DivergedRef {
        name: "refs/heads/main".into(),
        local_oid: "1".repeat(40),
        remote_oid: "2".repeat(40),
        merge_base: Some("3".repeat(40)),
        ahead: 2,
        behind: 5,
        protected: true,
        direction: Direction::Pull,
    }
}

fn decide(name: &str) -> Decision {
    registry()
        .decide(name, &ctx(), "", &diverged())
        .unwrap()
        .value
}

#[test]
fn each_strategy_decides_as_its_name_says() {
    assert_eq!(decide("ours"), Decision::KeepLocal);
    assert_eq!(decide("theirs"), Decision::TakeRemote);
    let Decision::DeferManual(reason) = decide("manual") else {
        panic!("manual must defer");
    };
    assert!(
        reason.contains("refs/heads/main") && reason.contains('5'),
        "{reason}"
    );
    let Decision::Abort(reason) = decide("abort") else {
        panic!("abort must abort");
    };
    assert!(reason.contains("refs/heads/main"), "{reason}");
}

#[test]
fn strategies_take_no_config() {
    let err = registry()
        .validate_config("theirs", World::ConflictStrategy, r#"{"x": 1}"#)
        .unwrap_err();
    assert!(matches!(err.kind, PluginErrorKind::Rejected(_)), "{err}");
    registry()
        .validate_config("theirs", World::ConflictStrategy, "{}")
        .unwrap();
}

fn request(url: &str, allowed: CredentialKinds, secret: Option<StoredSecret>) -> AuthRequest {
    AuthRequest {
        url: url.into(),
        username_from_url: None,
        allowed,
        secret,
    }
}

fn provide(name: &str, config: &str, request: &AuthRequest) -> Result<Credential, PluginError> {
    registry()
        .provide(name, &ctx(), config, request)
        .map(|o| o.value)
}

fn user_pass(username: &str, password: &str) -> Credential {
    Credential::UserPass(UserPass {
        username: username.into(),
        password: password.into(),
    })
}

#[test]
fn password_provider_hands_over_the_stored_pair_only_for_http_basic() {
    let secret = StoredSecret::Password(UserPass {
        username: "alice".into(),
        password: "pw".into(),
    });
    let req = request(
        "https://git.example.com/x",
        CredentialKinds::USER_PASS,
        Some(secret.clone()),
    );
    assert_eq!(
        provide("password", "", &req).unwrap(),
        user_pass("alice", "pw")
    );

    let ssh_only = request(
        "ssh://git.example.com/x",
        CredentialKinds::SSH_KEY,
        Some(secret),
    );
    let err = provide("password", "", &ssh_only).unwrap_err();
    assert!(err.to_string().contains("asks for an SSH key"), "{err}");

    let nothing = request(
        "https://git.example.com/x",
        CredentialKinds::USER_PASS,
        None,
    );
    let err = provide("password", "", &nothing).unwrap_err();
    assert!(err.to_string().contains("has no secret"), "{err}");
}

#[test]
fn token_provider_uses_the_username_each_forge_expects() {
    let token = |username: Option<&str>| {
        Some(StoredSecret::Token(TokenSecret {
            token: "tok".into(),
            username: username.map(Into::into),
        }))
    };
    let at = |url: &str, username: Option<&str>| {
        request(url, CredentialKinds::USER_PASS, token(username))
    };
    let cases = [
        ("https://github.com/a/b.git", "x-access-token"),
        ("https://GitLab.com/a/b.git", "oauth2"),
        ("https://bitbucket.org/a/b.git", "x-token-auth"),
        ("https://git.example.com/a/b.git", "oauth2"),
    ];
    for (url, expected) in cases {
        assert_eq!(
            provide("token", "", &at(url, None)).unwrap(),
            user_pass(expected, "tok"),
            "{url}"
        );
    }
    let config = r#"{"forges": {"git.example.com": "ci"}}"#;
    let req = at("https://git.example.com/a/b.git", None);
    assert_eq!(
        provide("token", config, &req).unwrap(),
        user_pass("ci", "tok")
    );
    let req = at("https://github.com/a/b.git", None);
    assert_eq!(
        provide("token", r#"{"username": "bot"}"#, &req).unwrap(),
        user_pass("bot", "tok")
    );
    let req = at("https://github.com/a/b.git", Some("me"));
    assert_eq!(provide("token", "", &req).unwrap(), user_pass("me", "tok"));
}

#[test]
fn ssh_key_provider_returns_the_key_with_its_passphrase() {
    let secret = StoredSecret::SshKey(SshKeySecret {
        private_key: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
        passphrase: Some("open sesame".into()),
        username: None,
    });
    let mut req = request(
        "ssh://git.example.com/x.git",
        CredentialKinds::SSH_KEY,
        Some(secret),
    );
    req.username_from_url = Some("deploy".into());
    let Credential::SshKey(key) = provide("ssh-key", "", &req).unwrap() else {
        panic!("expected an ssh key");
    };
    assert_eq!(key.username, "deploy");
    assert_eq!(key.passphrase.as_deref(), Some("open sesame"));
    assert!(key.private_key.starts_with("-----BEGIN"));

    req.username_from_url = None;
    let Credential::SshKey(key) = provide("ssh-key", "", &req).unwrap() else {
        panic!("expected an ssh key");
    };
    assert_eq!(key.username, "git");
}

#[test]
fn a_plugin_used_in_the_wrong_role_is_refused() {
    let err = registry()
        .filter("ours", &ctx(), "", &candidates(REFS, &[]))
        .unwrap_err();
    assert!(
        matches!(
            err.kind,
            PluginErrorKind::WrongWorld {
                expected: World::BranchFilter,
                actual: World::ConflictStrategy
            }
        ),
        "{err}"
    );
    let err = registry()
        .validate_config("token", World::BranchFilter, "")
        .unwrap_err();
    assert!(
        matches!(err.kind, PluginErrorKind::WrongWorld { .. }),
        "{err}"
    );
    let err = registry()
        .decide("no-such", &ctx(), "", &diverged())
        .unwrap_err();
    assert!(matches!(err.kind, PluginErrorKind::NotFound), "{err}");
}

#[test]
fn loading_a_component_as_another_world_fails_at_load() {
    let ours = BUILTINS.iter().find(|b| b.name == "ours").unwrap();
    let err = registry()
        .load("ours-as-filter", World::BranchFilter, ours.component)
        .unwrap_err();
    assert!(
        matches!(
            err.kind,
            PluginErrorKind::Invalid {
                world: World::BranchFilter,
                ..
            }
        ),
        "{err}"
    );
    assert!(registry().get("ours-as-filter").is_none());
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    // A valid empty core module: magic and version only.
    let core_module = b"\0asm\x01\0\0\0";
    let err = registry()
        .load("core", World::BranchFilter, core_module)
        .unwrap_err();
    assert!(matches!(err.kind, PluginErrorKind::Invalid { .. }), "{err}");
    let err = registry()
        .load("junk", World::BranchFilter, b"not wasm at all")
        .unwrap_err();
    assert!(matches!(err.kind, PluginErrorKind::Invalid { .. }), "{err}");
}

#[test]
fn builtins_are_listed_at_start_and_prepared_on_first_use() {
    // A registry of its own: the shared one is used by the other tests.
    let cache = Path::new(env!("OUT_DIR")).join("test-plugin-cache");
    let registry =
        Registry::with_builtins(Runtime::new(Limits::default(), Some(cache)).unwrap()).unwrap();
    let listed = registry.list();
    assert_eq!(listed.len(), BUILTINS.len());
    assert!(
        listed.iter().all(|p| p.builtin && !p.version.is_empty()),
        "{listed:?}"
    );
    assert!(BUILTINS.iter().all(|b| !registry.is_prepared(b.name)));

    let kept = registry
        .filter("regex-filter", &ctx(), "", &candidates(REFS, &[]))
        .unwrap();
    assert!(!kept.value.is_empty());
    let prepared: Vec<&str> = BUILTINS
        .iter()
        .map(|b| b.name)
        .filter(|name| registry.is_prepared(name))
        .collect();
    assert_eq!(prepared, ["regex-filter"]);
    registry
        .validate_config("theirs", World::ConflictStrategy, "")
        .unwrap();
    assert!(registry.is_prepared("theirs"));
}

/// A built-in's cached compilation is named by the digest `build.rs`
/// embedded beside it: it must be its component's.
#[test]
fn each_builtins_embedded_digest_is_its_components() {
    use sha2::{Digest, Sha256};
    for builtin in BUILTINS {
        let digest = hex::encode(Sha256::digest(builtin.component));
        assert_eq!(builtin.sha256, digest, "{}", builtin.name);
    }
}

/// A first start compiles into the cache (on an engine of its own, dropped
/// after) and runs the component from the file it wrote; the next start
/// runs the same file without compiling.
#[test]
fn a_component_compiled_into_an_empty_cache_runs_from_its_file() {
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        let runtime = Runtime::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
        let registry = Registry::with_builtins(runtime).unwrap();
        let kept = registry
            .filter("regex-filter", &ctx(), "", &candidates(REFS, &[]))
            .unwrap();
        assert!(!kept.value.is_empty());
    };
    // Each cached file and when it was written, in name order.
    let compiled = || {
        let mut files: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name(),
                    entry.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    start();
    let first = compiled();
    assert!(!first.is_empty());
    let named = |suffix: &str| {
        first
            .iter()
            .filter(|f| f.0.to_string_lossy().ends_with(suffix))
            .count()
    };
    assert_eq!(named(".info.json"), BUILTINS.len(), "{first:?}");
    assert_eq!(
        named(".cwasm") + named(".info.json"),
        first.len(),
        "{first:?}"
    );
    start();
    assert_eq!(compiled(), first);
}

/// Threads of one process that compile the same component at once (two
/// first calls of a built-in) each store it whole and run it from the file.
#[test]
fn a_component_compiled_by_several_threads_at_once_loads_in_each() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    let builtin = BUILTINS.iter().find(|b| b.name == "regex-filter").unwrap();
    std::thread::scope(|scope| {
        let compiling: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| runtime.prepare(builtin.wasm()).map(drop)))
            .collect();
        for thread in compiling {
            assert_eq!(thread.join().unwrap(), Ok(()));
        }
    });
}

/// A start that finds what the built-ins said of themselves in the cache
/// lists them without loading one (no engine built, nothing compiled); a
/// damaged note is asked of the component again and mended.
#[test]
fn a_start_that_finds_the_builtins_info_in_the_cache_loads_no_component() {
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        let runtime = Runtime::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
        Registry::with_builtins(runtime).unwrap()
    };
    let files = |suffix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(cache.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.to_string_lossy().ends_with(suffix))
            .collect()
    };
    let listed = start().list();
    assert!(listed.iter().all(|p| !p.version.is_empty()), "{listed:?}");
    // Without the compiled components, a start that loaded one would
    // compile it again.
    for compiled in files(".cwasm") {
        std::fs::remove_file(compiled).unwrap();
    }
    let registry = start();
    assert_eq!(registry.list(), listed);
    assert!(!registry.runtime().has_engine());
    assert!(files(".cwasm").is_empty());

    for note in files(".info.json") {
        std::fs::write(note, "{\"version\": 1").unwrap();
    }
    assert_eq!(start().list(), listed);
    for note in files(".info.json") {
        let text = std::fs::read_to_string(&note).unwrap();
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_ok(),
            "{text}"
        );
    }
}
