//! The console's pages: what an operator reads. Each handler loads what its
//! page shows in one blocking call, then writes the markup.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::html::{self, Section, esc};
use super::session::Session;
use super::{ConsoleError, ConsoleState, Html, blocking, id_of};
use crate::health::{self, Health, State as HealthState};
use crate::service::App;
use crate::store::mirrors::{MirrorFilter, MirrorOrder, Sort};
use crate::store::runs::InFlight;
use crate::store::{self, Conflict, ConflictStatus, Direction, Mirror, Page, Run, RunStatus};

/// Mirrors per page of the table.
const PER_PAGE: u32 = 50;

/// Runs drawn in a mirror's history chart and listed below it.
const HISTORY: u32 = 50;

/// The mirrors table's query string: every field optional, `""` for "any"
/// (what an untouched select sends).
#[derive(Debug, Default, Deserialize)]
pub struct MirrorsQuery {
    q: Option<String>,
    direction: Option<String>,
    state: Option<String>,
    order_by: Option<String>,
    sort: Option<String>,
    page: Option<String>,
}

/// What the mirrors table is asked for, checked.
#[derive(Debug, Clone, Default)]
struct Asked {
    filter: MirrorFilter,
    order: MirrorOrder,
    sort: Sort,
    page: u32,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A choice of the query (`""` for "any"), read as the admin API reads the
/// same parameter (`"pull"`, `"hard_failed"`, `"last_update_at"`, `"desc"`).
fn choice<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &Option<String>,
) -> Result<Option<T>, ConsoleError> {
    let Some(word) = given(value) else {
        return Ok(None);
    };
    let deserializer = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(word);
    T::deserialize(deserializer)
        .map(Some)
        .map_err(|_| ConsoleError::Invalid(format!("{field}: {word:?} is not one of the choices")))
}

fn parse_asked(q: &MirrorsQuery) -> Result<Asked, ConsoleError> {
    let direction = choice::<Direction>("direction", &q.direction)?;
    let state = choice::<HealthState>("state", &q.state)?;
    let order = choice::<MirrorOrder>("order_by", &q.order_by)?.unwrap_or_default();
    let sort = choice::<Sort>("sort", &q.sort)?.unwrap_or_default();
    let page =
        match given(&q.page) {
            None => 1,
            Some(p) => p.parse::<u32>().ok().filter(|p| *p >= 1).ok_or_else(|| {
                ConsoleError::Invalid(format!("page: {p:?} is not a page number"))
            })?,
        };
    let filter = MirrorFilter {
        direction,
        state,
        search: given(&q.q).map(str::to_string),
        ..MirrorFilter::default()
    };
    Ok(Asked {
        filter,
        order,
        sort,
        page,
    })
}

/// `/`: every mirror, a page at a time, filtered and sorted as asked.
pub async fn mirrors(
    session: Session,
    State(console): State<ConsoleState>,
    Query(query): Query<MirrorsQuery>,
) -> Result<Html, ConsoleError> {
    let asked = parse_asked(&query)?;
    let shown = asked.clone();
    let (rows, total) = blocking(&console, move |app| {
        let page = Page {
            page: shown.page,
            per_page: PER_PAGE,
        };
        app.store
            .with(|c| {
                let (mirrors, total) =
                    store::mirrors::page(c, &shown.filter, (shown.order, shown.sort), page)?;
                let rows = mirrors
                    .into_iter()
                    .map(|m| health::of(c, &m, app.config.health_window).map(|h| (m, h)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, store::StoreError>((rows, total))
            })
            .map_err(Into::into)
    })
    .await?;
    let mut body = filter_form(&asked);
    let _ = write!(
        body,
        "<p class=\"count\" role=\"status\">{total} mirror{}</p>",
        if total == 1 { "" } else { "s" }
    );
    body.push_str(&mirrors_table(&rows, &asked));
    body.push_str(&pager(&asked, total));
    Ok(Html(html::page(
        "Mirrors",
        Section::Mirrors,
        Some(&session.csrf),
        &body,
    )))
}

fn filter_form(asked: &Asked) -> String {
    let f = &asked.filter;
    let mut out = String::from(
        "<form method=\"get\" action=\"/\" class=\"filters\" role=\"search\">\
         <label>Project or URL <input type=\"search\" name=\"q\"",
    );
    let _ = write!(
        out,
        " value=\"{}\"></label>",
        esc(f.search.as_deref().unwrap_or(""))
    );
    let directions = [("", "any"), ("pull", "pull"), ("push", "push")];
    let current = f.direction.map_or("", Direction::as_str);
    out.push_str(&select("Direction", "direction", &directions, current));
    let states = [
        ("", "any"),
        ("healthy", "healthy"),
        ("failing", "failing"),
        ("hard_failed", "hard failed"),
        ("disabled", "paused"),
    ];
    let current = f.state.map_or("", HealthState::as_str);
    out.push_str(&select("State", "state", &states, current));
    let _ = write!(
        out,
        "<input type=\"hidden\" name=\"order_by\" value=\"{}\">\
         <input type=\"hidden\" name=\"sort\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        sort_key(asked.order),
        order_key(asked.sort)
    );
    out
}

fn select(label: &str, name: &str, choices: &[(&str, &str)], current: &str) -> String {
    let mut out = format!("<label>{label} <select name=\"{name}\">");
    for (value, text) in choices {
        let selected = if *value == current { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{value}\"{selected}>{text}</option>");
    }
    out.push_str("</select></label>");
    out
}

fn sort_key(order: MirrorOrder) -> &'static str {
    match order {
        MirrorOrder::Id => "id",
        MirrorOrder::Project => "project_id",
        MirrorOrder::State => "state",
        MirrorOrder::LastUpdate => "last_update_at",
    }
}

fn order_key(sort: Sort) -> &'static str {
    match sort {
        Sort::Ascending => "asc",
        Sort::Descending => "desc",
    }
}

/// The table's query string for `asked` with another sort or page.
fn href(asked: &Asked, order: MirrorOrder, sort: Sort, page: u32) -> String {
    let f = &asked.filter;
    let pairs = [
        ("q", f.search.clone().unwrap_or_default()),
        (
            "direction",
            f.direction.map_or("", Direction::as_str).into(),
        ),
        ("state", f.state.map_or("", HealthState::as_str).into()),
        ("order_by", sort_key(order).into()),
        ("sort", order_key(sort).into()),
        ("page", page.to_string()),
    ];
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    format!("/?{query}")
}

/// A column header that sorts by `order` when followed, and says so.
fn sortable(asked: &Asked, order: MirrorOrder, label: &str) -> String {
    let current = asked.order == order;
    let next = match (current, asked.sort) {
        (true, Sort::Ascending) => Sort::Descending,
        _ => Sort::Ascending,
    };
    let aria = match (current, asked.sort) {
        (false, _) => "none",
        (true, Sort::Ascending) => "ascending",
        (true, Sort::Descending) => "descending",
    };
    format!(
        "<th scope=\"col\" aria-sort=\"{aria}\"><a href=\"{}\">{label}</a></th>",
        esc(&href(asked, order, next, 1))
    )
}

fn mirrors_table(rows: &[(Mirror, Health)], asked: &Asked) -> String {
    let mut out = String::from(
        "<table class=\"mirrors\"><caption class=\"visually-hidden\">Mirrors</caption><thead><tr>",
    );
    out.push_str(&sortable(asked, MirrorOrder::Id, "Mirror"));
    out.push_str(&sortable(asked, MirrorOrder::Project, "Project"));
    out.push_str("<th scope=\"col\">Direction</th><th scope=\"col\">Remote</th>");
    out.push_str(&sortable(asked, MirrorOrder::State, "State"));
    out.push_str("<th scope=\"col\">Success rate</th>");
    out.push_str(&sortable(asked, MirrorOrder::LastUpdate, "Last update"));
    out.push_str("<th scope=\"col\">Last error</th></tr></thead><tbody>");
    for (m, h) in rows {
        let rate = h
            .success_rate
            .map_or_else(|| "–".to_string(), |r| format!("{r:.0}%"));
        let error = m.status.last_error.as_deref().unwrap_or("");
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"/mirrors/{id}\">#{id}</a></th><td>{}</td>\
             <td>{}</td><td class=\"url\">{}</td><td>{}</td><td>{rate}</td><td>{}</td>\
             <td class=\"error\" title=\"{}\">{}</td></tr>",
            esc(&m.project_id),
            m.direction.as_str(),
            esc(&m.url),
            state_cell(m, h),
            html::time(m.status.last_update_at.as_deref()),
            esc(error),
            esc(&shorten(error, 120)),
            id = m.mirror_id,
        );
    }
    if rows.is_empty() {
        out.push_str("<tr><td colspan=\"8\">No mirror matches.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The badge; for a failing mirror, since when: its failures in a row and
/// its last success, which is when the streak began.
fn state_cell(m: &Mirror, h: &Health) -> String {
    let mut out = html::state_badge(h.state);
    if matches!(h.state, HealthState::Failing | HealthState::HardFailed) {
        let since = match m.status.last_successful_update_at.as_deref() {
            Some(at) => format!("since {}", html::time(Some(at))),
            None => "never succeeded".to_string(),
        };
        let _ = write!(
            out,
            "<br><small>{} in a row, {since}</small>",
            h.consecutive_failures
        );
    }
    out
}

fn shorten(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn pager(asked: &Asked, total: u64) -> String {
    let pages = total.div_ceil(u64::from(PER_PAGE)).max(1);
    let page = u64::from(asked.page);
    let mut out = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
    if page > 1 {
        let _ = write!(
            out,
            "<a rel=\"prev\" href=\"{}\">Previous</a> ",
            esc(&href(asked, asked.order, asked.sort, asked.page - 1))
        );
    }
    let _ = write!(out, "<span>Page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(
            out,
            " <a rel=\"next\" href=\"{}\">Next</a>",
            esc(&href(asked, asked.order, asked.sort, asked.page + 1))
        );
    }
    out.push_str("</nav>");
    out
}

/// Everything a mirror's page shows.
struct MirrorView {
    mirror: Mirror,
    health: Health,
    schedule: Option<store::schedules::Schedule>,
    bandwidth: store::bandwidth::Bandwidth,
    runs: Vec<Run>,
    conflicts: Vec<Conflict>,
}

fn load_mirror(app: &App, id: i64) -> Result<MirrorView, ConsoleError> {
    let mirror = app.mirror(id)?;
    let schedule = match app.schedule(id) {
        Ok(s) => Some(s),
        Err(crate::service::ServiceError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let recent = Page {
        page: 1,
        per_page: HISTORY,
    };
    let open = Page {
        page: 1,
        per_page: 200,
    };
    let view = app.store.with(|c| {
        Ok::<_, store::StoreError>(MirrorView {
            health: health::of(c, &mirror, app.config.health_window)?,
            bandwidth: store::bandwidth::get(c, id)?,
            runs: store::runs::page(c, id, None, recent)?.0,
            conflicts: store::conflicts::page(c, id, Some(ConflictStatus::Open), open)?.0,
            schedule,
            mirror,
        })
    })?;
    Ok(view)
}

/// `/mirrors/{id}`: a mirror's state, settings, history and open conflicts.
pub async fn mirror(
    session: Session,
    State(console): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Html, ConsoleError> {
    let id = id_of(&id)?;
    let view = blocking(&console, move |app| load_mirror(app, id)).await?;
    let m = &view.mirror;
    let title = format!("Mirror #{} · {}", m.mirror_id, m.project_id);
    // What needs a person first: state and actions, open conflicts, then
    // what happened, then how it is set up.
    let mut body = mirror_actions(&view, &session.csrf);
    body.push_str(&status_section(&view));
    body.push_str(&conflicts_section(&view, &session.csrf));
    body.push_str(&history_section(&view.runs));
    body.push_str(&settings_section(&view));
    Ok(Html(html::page(
        &title,
        Section::Mirrors,
        Some(&session.csrf),
        &body,
    )))
}

fn mirror_actions(view: &MirrorView, csrf: &str) -> String {
    let id = view.mirror.mirror_id;
    let mut out = format!(
        "<div class=\"actions\">{} ",
        html::state_badge(view.health.state)
    );
    out.push_str(&html::button(
        &format!("/mirrors/{id}/sync"),
        csrf,
        "Sync now",
        &[],
    ));
    let (action, label) = if view.mirror.enabled {
        ("pause", "Pause")
    } else {
        ("resume", "Resume")
    };
    out.push_str(&html::button(
        &format!("/mirrors/{id}/{action}"),
        csrf,
        label,
        &[],
    ));
    out.push_str("</div>");
    out
}

fn status_section(view: &MirrorView) -> String {
    let (s, h) = (&view.mirror.status, &view.health);
    let mut out =
        String::from("<section aria-labelledby=\"status\"><h2 id=\"status\">Status</h2><dl>");
    html::item(&mut out, "Update status", s.update_status.as_str());
    html::item(
        &mut out,
        "Last update started",
        &html::time(s.last_update_started_at.as_deref()),
    );
    html::item(
        &mut out,
        "Last update",
        &html::time(s.last_update_at.as_deref()),
    );
    html::item(
        &mut out,
        "Last successful update",
        &html::time(s.last_successful_update_at.as_deref()),
    );
    let error = s
        .last_error
        .as_deref()
        .map_or_else(|| "none".to_string(), |e| esc(e).to_string());
    html::item(&mut out, "Last error", &error);
    let rate = h
        .success_rate
        .map_or_else(|| "–".into(), |r| format!("{r}%"));
    html::item(
        &mut out,
        "Success rate",
        &format!("{rate} of the last {} runs", h.total_updates),
    );
    html::item(
        &mut out,
        "Average duration",
        &html::duration(h.average_duration_ms),
    );
    html::item(
        &mut out,
        "95th percentile duration",
        &html::duration(h.p95_duration_ms),
    );
    html::item(
        &mut out,
        "Failures in a row",
        &h.consecutive_failures.to_string(),
    );
    out.push_str("</dl></section>");
    out
}

fn settings_section(view: &MirrorView) -> String {
    let m = &view.mirror;
    let mut out =
        String::from("<section aria-labelledby=\"settings\"><h2 id=\"settings\">Settings</h2><dl>");
    html::item(&mut out, "Direction", m.direction.as_str());
    html::item(&mut out, "Remote", &format!("<code>{}</code>", esc(&m.url)));
    html::item(&mut out, "Authentication", m.auth_method.as_str());
    html::item(
        &mut out,
        "Enabled",
        if m.enabled { "yes" } else { "no, paused" },
    );
    html::item(
        &mut out,
        "Conflict strategy",
        &esc(&m.conflict_strategy).to_string(),
    );
    let filter = m.branch_filter.as_deref().unwrap_or("none");
    html::item(&mut out, "Branch filter", &esc(filter).to_string());
    let regex = m.mirror_branch_regex.as_deref().unwrap_or("none");
    html::item(&mut out, "Branch regex", &esc(regex).to_string());
    html::item(
        &mut out,
        "Only protected branches",
        yes_no(m.only_protected_branches),
    );
    html::item(
        &mut out,
        "Keep divergent refs",
        yes_no(m.keep_divergent_refs),
    );
    let lfs = match (m.lfs, m.lfs_missing) {
        (false, _) => "off: pointer files only",
        (true, store::LfsMissing::Fail) => "on; a missing object fails the run",
        (true, store::LfsMissing::Skip) => "on; a missing object is skipped and named",
    };
    html::item(&mut out, "Git LFS objects", lfs);
    let proxy = match m.proxy_url.as_deref() {
        None => "the service's".to_string(),
        Some("") => "none".to_string(),
        Some(url) => esc(url).to_string(),
    };
    html::item(&mut out, "Proxy", &proxy);
    html::item(
        &mut out,
        "Own CA certificates",
        yes_no(m.tls_ca_pem.is_some()),
    );
    html::item(
        &mut out,
        "TLS client certificate",
        yes_no(m.tls_client_cert_pem.is_some()),
    );
    html::item(&mut out, "Schedule", &schedule_text(view.schedule.as_ref()));
    html::item(&mut out, "Bandwidth", &bandwidth_text(&view.bandwidth));
    html::item(&mut out, "Created", &html::time(Some(&m.created_at)));
    out.push_str("</dl></section>");
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn schedule_text(schedule: Option<&store::schedules::Schedule>) -> String {
    let Some(s) = schedule else {
        return "none: runs when asked or told by a webhook".into();
    };
    let cadence = match (&s.cron, s.interval_seconds) {
        (Some(cron), _) => format!("cron <code>{}</code>", esc(cron)),
        (None, Some(secs)) => format!("every {}", html::duration(Some(i64::from(secs) * 1000))),
        (None, None) => "retries only".into(),
    };
    let state = if s.hard_failed {
        "hard failed: waits for a manual sync"
    } else if s.enabled {
        "on"
    } else {
        "off"
    };
    format!("{cadence}, {state}")
}

fn bandwidth_text(b: &store::bandwidth::Bandwidth) -> String {
    let rate = b
        .max_bytes_per_second
        .map_or_else(|| "no cap".to_string(), |r| format!("{}/s", html::bytes(r)));
    let hosts = b.max_concurrent_updates.map_or_else(
        || "the service's host cap".to_string(),
        |n| format!("{n} at once per host"),
    );
    format!("{rate}; {hosts}")
}

fn conflicts_section(view: &MirrorView, csrf: &str) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"conflicts\"><h2 id=\"conflicts\">Conflicts waiting</h2>",
    );
    if view.conflicts.is_empty() {
        out.push_str("<p>None.</p></section>");
        return out;
    }
    out.push_str(
        "<table><thead><tr><th scope=\"col\">Ref</th><th scope=\"col\">Ours</th>\
         <th scope=\"col\">Theirs</th><th scope=\"col\">Ahead / behind</th>\
         <th scope=\"col\">Detected</th><th scope=\"col\">Resolve</th></tr></thead><tbody>",
    );
    let id = view.mirror.mirror_id;
    for c in &view.conflicts {
        let action = format!("/mirrors/{id}/conflicts/{}/resolve", c.conflict_id);
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{} / {}</td>\
             <td>{}</td><td>{}{}</td></tr>",
            esc(&c.ref_name),
            html::oid(Some(&c.local_oid)),
            html::oid(Some(&c.remote_oid)),
            c.ahead,
            c.behind,
            html::time(Some(&c.detected_at)),
            html::button(&action, csrf, "Keep ours", &[("resolution", "ours")]),
            html::button(&action, csrf, "Take theirs", &[("resolution", "theirs")]),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

fn history_section(runs: &[Run]) -> String {
    let mut out = String::from("<section aria-labelledby=\"history\"><h2 id=\"history\">Runs</h2>");
    if runs.is_empty() {
        out.push_str("<p>No run yet.</p></section>");
        return out;
    }
    out.push_str(&history_chart(runs));
    out.push_str(
        "<table><thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Trigger</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Started</th>\
         <th scope=\"col\">Duration</th><th scope=\"col\">Refs changed</th>\
         <th scope=\"col\">Error</th></tr></thead><tbody>",
    );
    for r in runs {
        let changed = r.refs_created + r.refs_updated + r.refs_deleted;
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"/runs/{id}\">#{id}</a></th><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{changed}</td><td class=\"error\">{}</td></tr>",
            r.trigger.as_str(),
            html::run_badge(r.status),
            html::time(r.started_at.as_deref()),
            html::duration(r.duration_ms),
            esc(&shorten(r.error.as_deref().unwrap_or(""), 120)),
            id = r.run_id,
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// The runs' durations as bars, oldest left, coloured by outcome (and
/// named in each bar's title, so colour is not the only sign).
fn history_chart(runs: &[Run]) -> String {
    const HEIGHT: f64 = 80.0;
    const BAR: usize = 12;
    let longest = runs
        .iter()
        .filter_map(|r| r.duration_ms)
        .max()
        .unwrap_or(1)
        .max(1);
    let width = runs.len() * BAR;
    let failed = runs
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
        .count();
    let mut out = format!(
        "<figure class=\"chart\"><svg role=\"img\" viewBox=\"0 0 {width} {HEIGHT}\" \
         width=\"{width}\" height=\"{HEIGHT}\" aria-labelledby=\"chart-caption\">"
    );
    for (i, r) in runs.iter().rev().enumerate() {
        let ms = r.duration_ms.unwrap_or(0);
        let h = ((ms as f64 / longest as f64) * (HEIGHT - 2.0)).max(2.0);
        let _ = write!(
            out,
            "<a href=\"/runs/{id}\"><rect class=\"bar run-{status}\" x=\"{x}\" y=\"{y:.1}\" \
             width=\"{w}\" height=\"{h:.1}\"><title>Run #{id}: {status}, {}</title></rect></a>",
            html::duration(r.duration_ms),
            id = r.run_id,
            status = r.status.as_str(),
            x = i * BAR + 1,
            y = HEIGHT - h,
            w = BAR - 2,
        );
    }
    let _ = write!(
        out,
        "</svg><figcaption id=\"chart-caption\">Durations of the last {} runs, oldest first \
         ({failed} failed; longest {}).</figcaption></figure>",
        runs.len(),
        html::duration(Some(longest))
    );
    out
}

/// `/runs/{id}`: a run, its live progress, what it did to each ref.
pub async fn run(
    session: Session,
    State(console): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Html, ConsoleError> {
    let run_id = id_of(&id)?;
    let (run, refs, project) = blocking(&console, move |app| {
        let run = app
            .store
            .with(|c| store::runs::get(c, run_id))?
            .ok_or_else(|| ConsoleError::NotFound(format!("no run {run_id}")))?;
        let refs = app.store.with(|c| store::runs::refs(c, run_id))?;
        let project = app.mirror(run.mirror_id)?.project_id;
        Ok((run, refs, project))
    })
    .await?;
    let mut body = format!(
        "<p>Of <a href=\"/mirrors/{id}\">mirror #{id}</a> ({}), {} run. {}</p>",
        esc(&project),
        run.trigger.as_str(),
        html::run_badge(run.status),
        id = run.mirror_id
    );
    if !run.status.is_finished() {
        body.push_str(&live_progress(&console, &run));
        body.push_str(&html::button(
            &format!("/runs/{run_id}/cancel"),
            &session.csrf,
            "Cancel",
            &[],
        ));
    }
    body.push_str(&run_facts(&run));
    body.push_str(&refs_table(&refs));
    Ok(Html(html::page(
        &format!("Run #{run_id}"),
        Section::Mirrors,
        Some(&session.csrf),
        &body,
    )))
}

/// The progress line the script keeps fresh (`data-run`); without script it
/// is as of the page's load.
fn live_progress(console: &ConsoleState, run: &Run) -> String {
    let snapshot = console.app.live.get(run.run_id).unwrap_or_default();
    format!(
        "<p class=\"progress\" data-run=\"{}\" aria-live=\"polite\">\
         <progress aria-label=\"Objects received\" max=\"{}\" value=\"{}\"></progress> \
         <span>{} of {} objects, {}</span></p>",
        run.run_id,
        snapshot.total_objects.max(1),
        snapshot.objects,
        snapshot.objects,
        snapshot.total_objects,
        html::bytes(snapshot.bytes)
    )
}

fn run_facts(run: &Run) -> String {
    let mut out = String::from("<dl>");
    html::item(&mut out, "Queued", &html::time(Some(&run.queued_at)));
    html::item(&mut out, "Started", &html::time(run.started_at.as_deref()));
    html::item(
        &mut out,
        "Finished",
        &html::time(run.finished_at.as_deref()),
    );
    html::item(&mut out, "Duration", &html::duration(run.duration_ms));
    html::item(
        &mut out,
        "Transferred",
        &html::bytes(u64::try_from(run.bytes_transferred).unwrap_or(0)),
    );
    let counts = format!(
        "{} created, {} updated, {} deleted, {} skipped, {} conflicts",
        run.refs_created, run.refs_updated, run.refs_deleted, run.refs_skipped, run.conflicts
    );
    html::item(&mut out, "Refs", &counts);
    if let Some(error) = &run.error {
        html::item(
            &mut out,
            "Error",
            &format!("<span class=\"error\">{}</span>", esc(error)),
        );
    }
    out.push_str("</dl>");
    out
}

fn refs_table(refs: &[store::runs::RunRef]) -> String {
    let mut out = String::from("<section aria-labelledby=\"refs\"><h2 id=\"refs\">Refs</h2>");
    if refs.is_empty() {
        out.push_str("<p>The run left every ref as it was.</p></section>");
        return out;
    }
    out.push_str(
        "<table class=\"refs\"><thead><tr><th scope=\"col\">Ref</th><th scope=\"col\">Action</th>\
         <th scope=\"col\">Ours before</th><th scope=\"col\">Theirs</th>\
         <th scope=\"col\">Reason</th><th scope=\"col\">LFS objects</th></tr></thead><tbody>",
    );
    for r in refs {
        let lfs = match r.lfs_objects {
            0 => String::new(),
            n => format!("{n} ({} bytes)", r.lfs_bytes),
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{lfs}</td></tr>",
            esc(&r.ref_name),
            r.action.as_str().replace('_', " "),
            html::oid(r.local_oid.as_deref()),
            html::oid(r.remote_oid.as_deref()),
            esc(r.reason.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// `/runs/{id}/progress`: what the script polls while a run is going on.
pub async fn progress(
    _: Session,
    State(console): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ConsoleError> {
    let run_id = id_of(&id)?;
    let status = blocking(&console, move |app| {
        app.store
            .with(|c| store::runs::get(c, run_id))?
            .map(|r| r.status)
            .ok_or_else(|| ConsoleError::NotFound(format!("no run {run_id}")))
    })
    .await?;
    let snapshot = console.app.live.get(run_id).unwrap_or_default();
    Ok(Json(json!({
        "status": status,
        "objects": snapshot.objects,
        "total_objects": snapshot.total_objects,
        "bytes": snapshot.bytes,
    })))
}

/// Runs listed on the queue page at most.
const QUEUE_SHOWN: u32 = 500;

/// `/queue`: the runs going on, with live progress, then those waiting.
pub async fn queue(
    session: Session,
    State(console): State<ConsoleState>,
) -> Result<Html, ConsoleError> {
    let runs = blocking(&console, |app| {
        Ok(app.store.with(|c| store::runs::in_flight(c, QUEUE_SHOWN))?)
    })
    .await?;
    let mut body = String::new();
    if runs.is_empty() {
        body.push_str("<p>Nothing is running or waiting.</p>");
    } else {
        body.push_str(&queue_table(&console, &runs));
    }
    Ok(Html(html::page(
        "Queue",
        Section::Queue,
        Some(&session.csrf),
        &body,
    )))
}

fn queue_table(console: &ConsoleState, runs: &[InFlight]) -> String {
    let mut out = String::from(
        "<table><thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Mirror</th>\
         <th scope=\"col\">Trigger</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Queued</th><th scope=\"col\">Started</th>\
         <th scope=\"col\">Progress</th></tr></thead><tbody>",
    );
    for InFlight { run, project_id } in runs {
        let progress = if run.status == RunStatus::Running {
            live_progress(console, run)
        } else {
            "waiting".into()
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"/runs/{id}\">#{id}</a></th>\
             <td><a href=\"/mirrors/{mirror}\">#{mirror} {}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{progress}</td></tr>",
            esc(project_id),
            run.trigger.as_str(),
            html::run_badge(run.status),
            html::time(Some(&run.queued_at)),
            html::time(run.started_at.as_deref()),
            id = run.run_id,
            mirror = run.mirror_id,
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// `/plugins`: the policies mirrors can name.
pub async fn plugins(session: Session, State(console): State<ConsoleState>) -> Html {
    let mut plugins = console.app.plugins.list();
    plugins.sort_by(|a, b| (a.world.as_str(), &a.name).cmp(&(b.world.as_str(), &b.name)));
    let mut body = String::from(
        "<table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">World</th>\
         <th scope=\"col\">Version</th><th scope=\"col\">Origin</th>\
         <th scope=\"col\">Size</th><th scope=\"col\">Description</th></tr></thead><tbody>",
    );
    for p in &plugins {
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.world.as_str(),
            esc(&p.version),
            if p.builtin { "built in" } else { "uploaded" },
            html::bytes(p.size_bytes as u64),
            esc(&p.description),
        );
    }
    body.push_str("</tbody></table>");
    Html(html::page(
        "Plugins",
        Section::Plugins,
        Some(&session.csrf),
        &body,
    ))
}
