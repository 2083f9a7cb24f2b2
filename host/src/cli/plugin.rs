//! `mirrorhost plugin new` scaffolds a plugin crate that builds on its own;
//! `mirrorhost plugin test` runs a component the way the server does (same
//! runtime, same limits) on one input and reports what it decided and cost.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use super::CliError;
use crate::plugins::{
    AuthRequest, Candidates, Credential, CredentialKinds, Decision, Direction, DivergedRef, Limits,
    MirrorContext, Outcome, Registry, Runtime, World, uploaded,
};
use crate::secrets::Secret;

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Scaffold a plugin crate in ./NAME, with the WIT contract, the SDK, a
    /// test, and a sample input for `plugin test`.
    New {
        name: String,
        #[arg(long)]
        world: World,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Run a component on one input as the server would; print the decision,
    /// fuel used, peak memory and time.
    Test {
        component: PathBuf,
        #[arg(long)]
        world: World,
        /// JSON: {"config", "context"?, and "refs" | "diverged" | "request"}.
        #[arg(long)]
        input: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: PluginCommand) -> Result<(), CliError> {
    match command {
        PluginCommand::New { name, world, path } => {
            let dir = path.unwrap_or_else(|| PathBuf::from(&name));
            scaffold(&name, world, &dir)?;
            println!("created {} ({world} plugin {name})", dir.display());
            Ok(())
        }
        PluginCommand::Test {
            component,
            world,
            input,
            json,
        } => {
            let report = test(&component, world, &input)?;
            if json {
                println!("{report:#}");
            } else {
                println!("decision: {}", report["decision"]);
                println!("fuel used: {}", report["fuel_used"]);
                println!("peak memory: {} bytes", report["peak_memory_bytes"]);
                println!("time: {} us", report["elapsed_us"]);
                for line in report["log"].as_array().into_iter().flatten() {
                    println!("log: {}", line.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
    }
}

const SDK_FILES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../plugins/sdk/src/lib.rs")),
    ("auth.rs", include_str!("../../../plugins/sdk/src/auth.rs")),
    (
        "config.rs",
        include_str!("../../../plugins/sdk/src/config.rs"),
    ),
    ("refs.rs", include_str!("../../../plugins/sdk/src/refs.rs")),
];
const WIT_FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

fn template(world: World) -> &'static str {
    match world {
        World::BranchFilter => include_str!("templates/branch_filter.rs"),
        World::ConflictStrategy => include_str!("templates/conflict_strategy.rs"),
        World::AuthProvider => include_str!("templates/auth_provider.rs"),
    }
}

/// Writes the crate. Refuses an existing directory rather than mix files.
fn scaffold(name: &str, world: World, dir: &Path) -> Result<(), CliError> {
    if !uploaded::valid_name(name) {
        return Err(CliError::Usage(format!(
            "{name:?}: a plugin name is 1 to 64 lower-case letters, digits and '-'"
        )));
    }
    if dir.exists() {
        return Err(CliError::Usage(format!("{} already exists", dir.display())));
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{world}}", world.as_str())
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
    };
    let sdk = Path::new("vendor/mirror-plugin-sdk");
    let mut files: Vec<(PathBuf, String)> = vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("templates/Cargo.toml.tmpl")),
        ),
        (
            "README.md".into(),
            fill(include_str!("templates/README.md.tmpl")),
        ),
        (
            ".gitignore".into(),
            include_str!("templates/gitignore").into(),
        ),
        (
            ".cargo/config.toml".into(),
            include_str!("templates/cargo-config.toml").into(),
        ),
        ("src/lib.rs".into(), fill(template(world))),
        ("case.json".into(), format!("{:#}\n", sample_case(world))),
        (
            sdk.join("Cargo.toml"),
            fill(include_str!("templates/sdk-Cargo.toml.tmpl")),
        ),
    ];
    files.extend(
        SDK_FILES
            .iter()
            .map(|(f, text)| (sdk.join("src").join(f), text.to_string())),
    );
    files.extend(
        WIT_FILES
            .iter()
            .map(|(f, text)| (Path::new("wit").join(f), text.to_string())),
    );
    for (relative, text) in files {
        let path = dir.join(relative);
        let write = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        write.map_err(|source| CliError::Read {
            what: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// An input for `plugin test` that exercises the scaffolded plugin.
fn sample_case(world: World) -> Value {
    let oid = |c: char| c.to_string().repeat(40);
    match world {
        World::BranchFilter => json!({
            "config": {"prefixes": ["main", "release/"]},
            "refs": [
                {"name": "refs/heads/main", "oid": oid('a'), "protected": true},
                {"name": "refs/heads/release/1.0", "oid": oid('b')},
                {"name": "refs/heads/feature/x", "oid": oid('c')},
            ],
        }),
        World::ConflictStrategy => json!({
            "config": {"take_remote": ["feature/"]},
            "diverged": {"name": "refs/heads/feature/x", "local_oid": oid('a'),
                         "remote_oid": oid('b'), "ahead": 1, "behind": 2},
        }),
        World::AuthProvider => json!({
            "config": {"username": "ci-bot"},
            "request": {"url": "https://git.example.com/group/project.git",
                        "allowed": ["user-pass"],
                        "secret": {"type": "token", "token": "not-a-real-token"}},
        }),
    }
}

/// One input of `plugin test`; `config` is JSON (an object, or a string taken
/// as is), and exactly the field of the plugin's world is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    config: Value,
    context: Option<ContextInput>,
    refs: Option<Vec<RefInput>>,
    diverged: Option<DivergedInput>,
    request: Option<RequestInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextInput {
    mirror_id: String,
    project_id: String,
    direction: String,
    remote_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefInput {
    name: String,
    oid: String,
    #[serde(default)]
    protected: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DivergedInput {
    name: String,
    local_oid: String,
    remote_oid: String,
    merge_base: Option<String>,
    ahead: u32,
    behind: u32,
    #[serde(default)]
    protected: bool,
    #[serde(default = "pull")]
    direction: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    url: String,
    username_from_url: Option<String>,
    allowed: Vec<String>,
    secret: Option<Secret>,
}

fn pull() -> String {
    "pull".into()
}

fn direction(text: &str) -> Result<Direction, CliError> {
    match text {
        "pull" => Ok(Direction::Pull),
        "push" => Ok(Direction::Push),
        other => Err(CliError::Usage(format!(
            "direction {other:?}: pull or push"
        ))),
    }
}

fn test(component: &Path, world: World, input: &Path) -> Result<Value, CliError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CliError::Read {
            what: path.display().to_string(),
            source,
        })
    };
    let case: Case = serde_json::from_slice(&read(input)?)
        .map_err(|e| CliError::Usage(format!("{}: {e}", input.display())))?;
    let name = component.file_stem().map_or_else(
        || "plugin".into(),
        |s| s.to_string_lossy().replace('_', "-"),
    );
    let registry = Registry::new(Runtime::new(Limits::default(), None).map_err(failed)?);
    registry
        .load(&name, world, &read(component)?)
        .map_err(failed)?;
    let config = match &case.config {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    registry
        .validate_config(&name, world, &config)
        .map_err(|e| CliError::Failed(format!("config refused: {e}")))?;
    let ctx = match case.context {
        Some(given) => given.try_into()?,
        None => MirrorContext {
            mirror_id: "0".into(),
            project_id: "test/project".into(),
            direction: Direction::Pull,
            remote_url: "https://example.com/test/project.git".into(),
        },
    };
    let missing = |field: &str| CliError::Usage(format!("a {world} case needs \"{field}\""));
    Ok(match world {
        World::BranchFilter => {
            let refs = candidates(case.refs.ok_or_else(|| missing("refs"))?)?;
            let outcome = registry
                .filter(&name, &ctx, &config, &refs)
                .map_err(failed)?;
            report(&outcome, json!({ "kept": outcome.value }))
        }
        World::ConflictStrategy => {
            let diverged = case
                .diverged
                .ok_or_else(|| missing("diverged"))?
                .try_into()?;
            let outcome = registry
                .decide(&name, &ctx, &config, &diverged)
                .map_err(failed)?;
            report(&outcome, decision(&outcome.value))
        }
        World::AuthProvider => {
            let request = case.request.ok_or_else(|| missing("request"))?.try_into()?;
            let outcome = registry
                .provide(&name, &ctx, &config, &request)
                .map_err(failed)?;
            report(&outcome, credential(&outcome.value))
        }
    })
}

fn failed(e: crate::plugins::PluginError) -> CliError {
    CliError::Failed(e.to_string())
}

fn candidates(refs: Vec<RefInput>) -> Result<Candidates, CliError> {
    let mut candidates = Candidates::new();
    for r in refs {
        if !candidates.push(&r.name, &r.oid, r.protected) {
            return Err(CliError::Usage(format!("ref {}: bad name or oid", r.name)));
        }
    }
    Ok(candidates)
}

impl TryFrom<ContextInput> for MirrorContext {
    type Error = CliError;

    fn try_from(c: ContextInput) -> Result<Self, CliError> {
        Ok(MirrorContext {
            mirror_id: c.mirror_id,
            project_id: c.project_id,
            direction: direction(&c.direction)?,
            remote_url: c.remote_url,
        })
    }
}

impl TryFrom<DivergedInput> for DivergedRef {
    type Error = CliError;

    fn try_from(d: DivergedInput) -> Result<Self, CliError> {
        Ok(DivergedRef {
            direction: direction(&d.direction)?,
            name: d.name,
            local_oid: d.local_oid,
            remote_oid: d.remote_oid,
            merge_base: d.merge_base,
            ahead: d.ahead,
            behind: d.behind,
            protected: d.protected,
        })
    }
}

impl TryFrom<RequestInput> for AuthRequest {
    type Error = CliError;

    fn try_from(r: RequestInput) -> Result<Self, CliError> {
        let mut allowed = CredentialKinds::empty();
        for kind in &r.allowed {
            allowed |= match kind.as_str() {
                "user-pass" => CredentialKinds::USER_PASS,
                "ssh-key" => CredentialKinds::SSH_KEY,
                other => {
                    return Err(CliError::Usage(format!(
                        "allowed: {other:?} is not user-pass or ssh-key"
                    )));
                }
            };
        }
        Ok(AuthRequest {
            url: r.url,
            username_from_url: r.username_from_url,
            allowed,
            secret: r.secret.map(Into::into),
        })
    }
}

fn report<T>(outcome: &Outcome<T>, decision: Value) -> Value {
    let log: Vec<String> = outcome
        .log
        .iter()
        .map(|l| format!("{}: {}", l.level, l.message))
        .collect();
    json!({
        "decision": decision,
        "fuel_used": outcome.fuel_used,
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "elapsed_us": outcome.elapsed.as_micros() as u64,
        "log": log,
    })
}

fn decision(d: &Decision) -> Value {
    match d {
        Decision::KeepLocal => json!("keep-local"),
        Decision::TakeRemote => json!("take-remote"),
        Decision::DeferManual(reason) => json!({ "defer-manual": reason }),
        Decision::Abort(reason) => json!({ "abort": reason }),
    }
}

/// The credential with its secret parts replaced by their length: a test run
/// should not put a password on the screen.
fn credential(c: &Credential) -> Value {
    let hidden = |s: &str| format!("<{} characters>", s.chars().count());
    match c {
        Credential::None => json!("none"),
        Credential::UserPass(up) => json!({
            "user-pass": {"username": up.username, "password": hidden(&up.password)}
        }),
        Credential::SshKey(key) => json!({
            "ssh-key": {"username": key.username, "private_key": hidden(&key.private_key),
                        "passphrase": key.passphrase.as_deref().map(hidden)}
        }),
    }
}
