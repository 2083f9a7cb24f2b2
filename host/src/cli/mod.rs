//! The operator's commands against a running server: `mirror`, `project`,
//! `conflicts`, `credentials`. Each is one or a few admin API calls; the server does the work.

mod client;
mod output;
mod plugin;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

pub use client::{Client, ClientError};
pub use plugin::{PluginCommand, run as plugin};

/// Where the server is and how to prove we may use it.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the running service.
    #[arg(
        long,
        global = true,
        env = "MIRRORHOST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Admin token; without it, <data-dir>/admin-token is read (the file `serve`
    /// writes). Prefer the variable or the file: a flag shows in the process list.
    #[arg(
        long,
        global = true,
        env = "MIRRORHOST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Data dir of a local server, for its admin.token.
    #[arg(
        long,
        global = true,
        env = "MIRRORHOST_DATA_DIR",
        default_value = "data"
    )]
    pub data_dir: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "no admin token: pass --token, set MIRRORHOST_ADMIN_TOKEN, or point --data-dir at the server's data dir ({0})"
    )]
    NoToken(String),
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// The command ran, and what it reports is a failure (a failed run).
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, clap::Subcommand)]
pub enum MirrorCommand {
    /// Create a pull mirror: import from an upstream into a project.
    AddPull(AddMirror),
    /// Create a push mirror: export a project to a destination after each change.
    AddPush(AddMirror),
    /// List mirrors, as the admin API filters and sorts them.
    List {
        #[arg(long)]
        project: Option<String>,
        /// pull or push.
        #[arg(long)]
        direction: Option<String>,
        /// healthy, failing, hard_failed or disabled.
        #[arg(long)]
        state: Option<String>,
        /// Text in the project id or URL.
        #[arg(long)]
        search: Option<String>,
        /// id, project_id, state or last_update_at.
        #[arg(long)]
        order_by: Option<String>,
        /// asc or desc.
        #[arg(long)]
        sort: Option<String>,
    },
    /// Run a mirror now and show its progress until the run ends.
    Sync { mirror_id: i64 },
    /// What one run did to each ref it did not leave alone, and why.
    Run { run_id: i64 },
    /// Cancel a queued or running run; no ref changes.
    Cancel { run_id: i64 },
    /// Health of one mirror, from its run history.
    Health {
        mirror_id: i64,
        #[arg(long)]
        window: Option<u32>,
    },
    /// Mirrors under a success rate, and hard-failed ones.
    Unhealthy {
        #[arg(long, default_value_t = 90.0)]
        min_success_rate: f64,
        #[arg(long)]
        window: Option<u32>,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddMirror {
    /// The project, as `group/name`.
    #[arg(long)]
    project: String,
    #[arg(long)]
    url: String,
    /// none, password, token or ssh_key.
    #[arg(long, default_value = "none")]
    auth_method: String,
    /// Seconds between scheduled runs (pull mirrors).
    #[arg(long)]
    interval: Option<u32>,
    /// Only refs matching this regex are mirrored.
    #[arg(long)]
    branch_regex: Option<String>,
    #[arg(long)]
    only_protected_branches: bool,
    #[arg(long)]
    keep_divergent_refs: bool,
    /// ours, theirs, manual, abort or a plugin's name.
    #[arg(long)]
    conflict_strategy: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    /// Copy LFS pointer files only, not the objects they name.
    #[arg(long)]
    no_lfs: bool,
    /// What a run does with an LFS object it cannot move: fail or skip.
    #[arg(long)]
    lfs_missing: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ProjectCommand {
    /// Pack the project's repository anew now and drop objects unreachable
    /// for longer than the grace period (it also happens after pulls).
    Housekeeping { project_id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConflictsCommand {
    /// A mirror's conflicts, open and resolved.
    List { mirror_id: i64 },
    /// Settle an open conflict: `ours` keeps the local ref, `theirs` takes the
    /// remote's.
    Resolve {
        mirror_id: i64,
        conflict_id: i64,
        #[arg(long)]
        strategy: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CredentialsCommand {
    /// Store a mirror's credential. The secret (password, token or private key)
    /// is read from --secret-file or standard input, never from the command line.
    Set {
        mirror_id: i64,
        /// password, token or ssh_key.
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        username: Option<String>,
        /// File holding the secret; `-` or nothing reads standard input.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// File holding the private key's passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

impl Connection {
    pub fn client(&self) -> Result<Client, CliError> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => {
                let path = self.data_dir.join(crate::secrets::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|_| CliError::NoToken(path.display().to_string()))?
            }
        };
        Ok(Client::new(&self.server, token)?)
    }
}

pub async fn mirror(conn: &Connection, command: MirrorCommand) -> Result<(), CliError> {
    let client = conn.client()?;
    let answer = match command {
        MirrorCommand::AddPull(add) => client.post("/mirrors/pull", add.body(true)).await?,
        MirrorCommand::AddPush(add) => client.post("/mirrors/push", add.body(false)).await?,
        MirrorCommand::List {
            project,
            direction,
            state,
            search,
            order_by,
            sort,
        } => {
            // The service checks each value and names the one it refuses.
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in [
                ("project_id", project),
                ("direction", direction),
                ("state", state),
                ("search", search),
                ("order_by", order_by),
                ("sort", sort),
            ] {
                if let Some(value) = value {
                    query.append_pair(name, &value);
                }
            }
            let path = format!("/mirrors?{}", query.finish());
            all_pages(&client, &path, "mirrors").await?
        }
        MirrorCommand::Sync { mirror_id } => return sync(&client, mirror_id, conn.json).await,
        MirrorCommand::Run { run_id } => client.get(&format!("/runs/{run_id}/refs")).await?,
        MirrorCommand::Cancel { run_id } => {
            client
                .post(&format!("/runs/{run_id}/cancel"), json!({}))
                .await?
        }
        MirrorCommand::Health { mirror_id, window } => {
            let query = window.map_or_else(String::new, |w| format!("?window={w}"));
            client
                .get(&format!("/mirrors/{mirror_id}/health{query}"))
                .await?
        }
        MirrorCommand::Unhealthy {
            min_success_rate,
            window,
        } => {
            let window = window.map_or_else(String::new, |w| format!("&window={w}"));
            client
                .get(&format!(
                    "/health/unhealthy?min_success_rate={min_success_rate}{window}"
                ))
                .await?
        }
    };
    output::print(&answer, conn.json);
    Ok(())
}

/// Every page of the list at `path` (which has a query), as one list under `key`.
async fn all_pages(client: &Client, path: &str, key: &str) -> Result<Value, CliError> {
    const PER_PAGE: usize = 100;
    let mut all = Vec::new();
    for page in 1.. {
        let answer = client
            .get(&format!("{path}&per_page={PER_PAGE}&page={page}"))
            .await?;
        let rows = answer[key].as_array().cloned().unwrap_or_default();
        let last = rows.len() < PER_PAGE;
        all.extend(rows);
        if last {
            break;
        }
    }
    Ok(json!({ key: all }))
}

impl AddMirror {
    fn body(self, pull: bool) -> Value {
        let mut body = json!({
            "project_id": self.project,
            "url": self.url,
            "auth_method": self.auth_method,
            "only_protected_branches": self.only_protected_branches,
            "keep_divergent_refs": self.keep_divergent_refs,
            "enabled": !self.disabled,
            "lfs": !self.no_lfs,
        });
        if let Some(missing) = self.lfs_missing {
            body["lfs_missing"] = missing.into();
        }
        if let (Some(interval), true) = (self.interval, pull) {
            body["update_interval"] = interval.into();
        }
        if let Some(regex) = self.branch_regex {
            body["mirror_branch_regex"] = regex.into();
        }
        if let Some(strategy) = self.conflict_strategy {
            body["conflict_strategy"] = strategy.into();
        }
        body
    }
}

/// Queues a run, then follows it: one progress line per change (rewritten in
/// place on a terminal) until it ends. A failed run is an error exit.
async fn sync(client: &Client, mirror_id: i64, json: bool) -> Result<(), CliError> {
    let queued = client
        .post(&format!("/mirrors/{mirror_id}/sync"), json!({}))
        .await?;
    let run_id = queued["run_id"]
        .as_i64()
        .ok_or_else(|| ClientError::Decode(format!("no run_id in {queued}")))?;
    let mut progress = output::Progress::new(run_id);
    let run = loop {
        let run = client.get(&format!("/runs/{run_id}")).await?;
        match run["status"].as_str() {
            Some("succeeded" | "failed" | "interrupted" | "cancelled") => break run,
            _ => progress.show(&run),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    progress.done();
    output::print(&run, json);
    match run["status"].as_str() {
        Some("succeeded") => Ok(()),
        _ => Err(CliError::Failed(format!(
            "run {run_id} {}: {}",
            run["status"].as_str().unwrap_or("ended"),
            run["error"].as_str().unwrap_or("no error recorded")
        ))),
    }
}

pub async fn project(conn: &Connection, command: ProjectCommand) -> Result<(), CliError> {
    let client = conn.client()?;
    let answer = match command {
        ProjectCommand::Housekeeping { project_id } => {
            let encoded: String =
                url::form_urlencoded::byte_serialize(project_id.as_bytes()).collect();
            client
                .post(&format!("/projects/{encoded}/housekeeping"), json!({}))
                .await?
        }
    };
    output::print(&answer, conn.json);
    Ok(())
}

pub async fn conflicts(conn: &Connection, command: ConflictsCommand) -> Result<(), CliError> {
    let client = conn.client()?;
    let answer = match command {
        ConflictsCommand::List { mirror_id } => {
            let path = format!("/mirrors/{mirror_id}/conflicts?");
            all_pages(&client, &path, "conflicts").await?
        }
        ConflictsCommand::Resolve {
            mirror_id,
            conflict_id,
            strategy,
        } => {
            client
                .post(
                    &format!("/mirrors/{mirror_id}/conflicts/{conflict_id}/resolve"),
                    json!({ "strategy": strategy }),
                )
                .await?
        }
    };
    output::print(&answer, conn.json);
    Ok(())
}

pub async fn credentials(conn: &Connection, command: CredentialsCommand) -> Result<(), CliError> {
    let CredentialsCommand::Set {
        mirror_id,
        kind,
        username,
        secret_file,
        passphrase_file,
    } = command;
    let secret = read_secret(secret_file.as_deref())?;
    let body = match kind.as_str() {
        "password" => {
            json!({"type": "password", "username": username.unwrap_or_default(), "password": secret})
        }
        "token" => json!({"type": "token", "username": username, "token": secret}),
        "ssh_key" | "ssh-key" => {
            let passphrase = passphrase_file
                .map(|path| read_secret(Some(&path)))
                .transpose()?;
            json!({"type": "ssh_key", "username": username, "private_key": secret, "passphrase": passphrase})
        }
        other => {
            return Err(CliError::Usage(format!(
                "--type {other}: expected password, token or ssh_key"
            )));
        }
    };
    let client = conn.client()?;
    let answer = client
        .put(&format!("/mirrors/{mirror_id}/credentials"), body)
        .await?;
    output::print(&answer, conn.json);
    Ok(())
}

/// A secret from a file or standard input, without its trailing newline (an
/// SSH key keeps its own).
fn read_secret(path: Option<&Path>) -> Result<String, CliError> {
    let (what, text) = match path.filter(|p| *p != Path::new("-")) {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|source| CliError::Read {
                what: path.display().to_string(),
                source,
            })?,
        ),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CliError::Read {
                    what: "standard input".into(),
                    source,
                })?;
            ("standard input".to_string(), text)
        }
    };
    if text.contains("PRIVATE KEY-----") {
        return Ok(text);
    }
    let trimmed = text.trim_end_matches(['\r', '\n']).to_string();
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!("{what} holds no secret")));
    }
    Ok(trimmed)
}
