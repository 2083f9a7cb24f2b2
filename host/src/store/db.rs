//! One SQL API over SQLite (rusqlite) and PostgreSQL (postgres). The store's
//! statements are written once, in the SQL both databases speak, with
//! numbered placeholders (`?1`); PostgreSQL is handed them as `$1`. Values
//! cross as [`Value`]s: bound to the type the database asks for (PostgreSQL
//! infers each parameter's type when it prepares a statement), read back by
//! [`FromSql`], so an integer column is an `i64` on both sides.
//!
//! Both backends are synchronous and used by one thread at a time (the
//! store's mutex). The PostgreSQL client lives on a thread of its own: the
//! `postgres` crate blocks on a runtime of its own, which tokio forbids on a
//! thread that runs async code, and the store is called from both kinds.

use std::cell::Cell as Flag;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::mpsc;

use bytes::BytesMut;
use postgres::types::{IsNull, Type, to_sql_checked};

use super::StoreError;

/// One value on its way in or out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// What can be bound to a placeholder.
pub trait ToSql {
    fn to_value(&self) -> Value<'_>;
}

/// What a column can be read as.
pub trait FromSql: Sized {
    fn from_value(value: Value<'_>) -> Result<Self, String>;
}

macro_rules! integers {
    ($($t:ty),+) => {$(
        impl ToSql for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(i64::from(*self))
            }
        }
        impl FromSql for $t {
            fn from_value(value: Value<'_>) -> Result<Self, String> {
                match value {
                    Value::Int(n) => <$t>::try_from(n).map_err(|e| format!("{n}: {e}")),
                    other => Err(format!("expected an integer, found {}", other.kind())),
                }
            }
        }
    )+};
}
integers!(i64, i32, u32, u16, u8);

impl ToSql for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl FromSql for bool {
    fn from_value(value: Value<'_>) -> Result<Self, String> {
        i64::from_value(value).map(|n| n != 0)
    }
}

impl ToSql for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl FromSql for f64 {
    fn from_value(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Real(x) => Ok(x),
            // SQLite hands back a whole REAL as an integer.
            Value::Int(n) => Ok(n as f64),
            other => Err(format!("expected a real, found {}", other.kind())),
        }
    }
}

impl ToSql for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToSql for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl FromSql for String {
    fn from_value(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.to_string()),
            other => Err(format!("expected text, found {}", other.kind())),
        }
    }
}

impl ToSql for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToSql for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl FromSql for Vec<u8> {
    fn from_value(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.to_vec()),
            other => Err(format!("expected a blob, found {}", other.kind())),
        }
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, T::to_value)
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_value(value: Value<'_>) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

/// A statement's parameters: `[]`, an array of one type, or `params![..]`.
pub trait Params {
    fn values(&self) -> Vec<Value<'_>>;
}

impl Params for [&dyn ToSql; 0] {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}

impl Params for &[&dyn ToSql] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

macro_rules! arrays {
    ($($n:literal),+) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(&self) -> Vec<Value<'_>> {
                self.iter().map(ToSql::to_value).collect()
            }
        }
    )+};
}
arrays!(1, 2, 3, 4, 5, 6, 7, 8);

/// Parameters of mixed types, as rusqlite's `params!`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::store::db::ToSql),*] as &[&dyn $crate::store::db::ToSql]
    };
}
pub(crate) use params;

/// One row of an answer.
pub struct Row<'a>(RowOf<'a>);

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Row({} columns)", self.column_count())
    }
}

enum RowOf<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a [Cell]),
}

impl Row<'_> {
    /// Column `index` (from 0) as a `T`.
    pub fn get<T: FromSql>(&self, index: usize) -> Result<T, StoreError> {
        let decoded = match &self.0 {
            RowOf::Sqlite(row) => T::from_value(sqlite_value(row.get_ref(index)?)?),
            RowOf::Postgres(cells) => {
                let cell = cells.get(index).ok_or(StoreError::Decode {
                    index,
                    message: "no such column".into(),
                })?;
                T::from_value(cell.value())
            }
        };
        decoded.map_err(|message| StoreError::Decode { index, message })
    }

    pub fn column_count(&self) -> usize {
        match &self.0 {
            RowOf::Sqlite(row) => row.as_ref().column_count(),
            RowOf::Postgres(cells) => cells.len(),
        }
    }
}

fn sqlite_value(value: rusqlite::types::ValueRef<'_>) -> Result<Value<'_>, StoreError> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(t) => {
            Value::Text(std::str::from_utf8(t).map_err(|e| StoreError::Decode {
                index: 0,
                message: e.to_string(),
            })?)
        }
        ValueRef::Blob(b) => Value::Blob(b),
    })
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(n),
            Value::Real(x) => ValueRef::Real(x),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A value owned: a PostgreSQL column (rows are read whole before they are
/// handed on), or a parameter on its way to the client's thread.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    fn owned(value: Value<'_>) -> Self {
        match value {
            Value::Null => Cell::Null,
            Value::Int(n) => Cell::Int(n),
            Value::Real(x) => Cell::Real(x),
            Value::Text(s) => Cell::Text(s.to_string()),
            Value::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::Int(*n),
            Cell::Real(x) => Value::Real(*x),
            Cell::Text(s) => Value::Text(s),
            Cell::Blob(b) => Value::Blob(b),
        }
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl<'a> postgres::types::FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Cell::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Cell::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Cell::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Cell::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Cell::Text(String::from_sql(ty, raw)?)
            }
            ref other => return Err(format!("a column of type {other} (cast it)").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A value bound to the type PostgreSQL inferred for its placeholder.
#[derive(Debug)]
struct Bound<'a>(Value<'a>);

impl postgres::types::ToSql for Bound<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(n), &Type::INT8) => n.to_sql(ty, out),
            (Value::Int(n), &Type::INT4) => i32::try_from(n)?.to_sql(ty, out),
            (Value::Int(n), &Type::INT2) => i16::try_from(n)?.to_sql(ty, out),
            (Value::Int(n), &Type::BOOL) => (n != 0).to_sql(ty, out),
            (Value::Int(n), &Type::FLOAT8) => (n as f64).to_sql(ty, out),
            (Value::Real(x), &Type::FLOAT8) => x.to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                s.to_sql(ty, out)
            }
            (Value::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            (value, ty) => {
                Err(format!("cannot bind {} to a parameter of type {ty}", value.kind()).into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// What [`Db::lock`] serialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Migrations: nodes starting together apply each once.
    Migrations,
    /// Claiming jobs, so that the caps are counted exactly.
    Claims,
    /// Queuing a run of one mirror: one pending job however many nodes ask.
    Mirror(i64),
}

impl Lock {
    fn key(self) -> i64 {
        // Distinct ranges: mirror ids are positive and below 2^40.
        const MIRRORS: i64 = 1 << 40;
        match self {
            Lock::Migrations => 0x6d69_7272_6f72, // "mirror"
            Lock::Claims => 1,
            Lock::Mirror(id) => MIRRORS + id,
        }
    }
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection to either database.
pub struct Db {
    conn: Conn,
    in_transaction: Flag<bool>,
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Pg),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({:?})", self.backend())
    }
}

impl Db {
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        Self {
            conn: Conn::Sqlite(conn),
            in_transaction: Flag::new(false),
        }
    }

    /// Connects to PostgreSQL at `url` (without TLS: the database is on the
    /// operator's own network or machine).
    pub fn postgres(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Conn::Postgres(Pg::connect(url)?),
            in_transaction: Flag::new(false),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, hooks).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.conn {
            Conn::Sqlite(conn) => Some(conn),
            Conn::Postgres(_) => None,
        }
    }

    /// Runs `sql` with `params`; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, StoreError> {
        let values = params.values();
        match &self.conn {
            Conn::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(values.iter()))?),
            Conn::Postgres(pg) => match pg.ask(Work::Execute, sql, &values)? {
                Answer::Changed(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                _ => Err(StoreError::Connection(ANSWER_MISMATCH.into())),
            },
        }
    }

    /// Every row `sql` answers, each read by `read`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: impl Params,
        mut read: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let values = params.values();
        match &self.conn {
            Conn::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(read(&Row(RowOf::Sqlite(row)))?);
                }
                Ok(out)
            }
            Conn::Postgres(pg) => match pg.ask(Work::Query, sql, &values)? {
                Answer::Rows(rows) => rows
                    .iter()
                    .map(|cells| read(&Row(RowOf::Postgres(cells))))
                    .collect(),
                _ => Err(StoreError::Connection(ANSWER_MISMATCH.into())),
            },
        }
    }

    /// The first row `sql` answers, read by `read`; [`StoreError::NoRow`]
    /// when there is none (see [`Optional::optional`]).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut read = Some(read);
        let mut rows = self.query_map(sql, params, |row| match read.take() {
            Some(read) => read(row).map(Some),
            None => Ok(None),
        })?;
        match rows.first_mut().and_then(Option::take) {
            Some(value) => Ok(value),
            None => Err(StoreError::NoRow),
        }
    }

    /// Statements without parameters, separated by `;`.
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        match &self.conn {
            Conn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Conn::Postgres(pg) => pg.ask(Work::Batch, sql, &[]).map(|_| ()),
        }
    }

    /// Serialises this transaction with every other holding `lock`, across
    /// all the nodes of a cluster, until it ends (PostgreSQL's transaction
    /// advisory lock). SQLite has one writer at a time already: nothing to do.
    pub fn lock(&self, lock: Lock) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            self.execute("SELECT pg_advisory_xact_lock(?1)", [lock.key()])?;
        }
        Ok(())
    }

    /// Begins a transaction: committed by [`Tx::commit`], rolled back when
    /// dropped before. Transactions do not nest.
    pub fn transaction(&self) -> Result<Tx<'_>, StoreError> {
        if self.in_transaction.replace(true) {
            return Err(StoreError::NestedTransaction);
        }
        // SQLite: the write lock at once, so that a second connection to the
        // file (a tool, a test) waits its turn instead of failing mid-way.
        let begin = match self.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = self.execute_batch(begin) {
            self.in_transaction.set(false);
            return Err(e);
        }
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

/// The client thread answers each request with its work's kind of answer;
/// another would be a bug here, never "no row" (which `optional` forgives).
const ANSWER_MISMATCH: &str = "the client thread answered another kind of request";

/// The PostgreSQL client's thread, reached by a channel: the [`Db`] asks,
/// the thread answers, one statement at a time.
struct Pg {
    requests: mpsc::Sender<Request>,
}

enum Work {
    Execute,
    Query,
    Batch,
}

enum Answer {
    Changed(u64),
    Rows(Vec<Vec<Cell>>),
    Done,
}

struct Request {
    work: Work,
    sql: String,
    values: Vec<Cell>,
    reply: mpsc::SyncSender<Result<Answer, StoreError>>,
}

impl Pg {
    fn connect(url: &str) -> Result<Self, StoreError> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (ready, connected) = mpsc::sync_channel(1);
        let url = url.to_string();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(
                move || match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(mut client) => {
                        // A commit returns before the server flushes its WAL:
                        // a crash of the database server may lose the last
                        // fraction of a second, never corrupt it (SQLite's
                        // NORMAL sync in WAL mode makes the same trade). A
                        // lost run record is a run retried, which finds its
                        // refs landed. 1.5x the dispatch rate (BENCHMARKS.md).
                        // The server's notices ("already exists, skipping")
                        // are not the operator's news.
                        let session =
                            "SET synchronous_commit = off; SET client_min_messages = warning";
                        if let Err(e) = client.batch_execute(session) {
                            let _ = ready.send(Err(StoreError::from(e)));
                            return;
                        }
                        let _ = ready.send(Ok(()));
                        serve(client, inbox);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(StoreError::from(e)));
                    }
                },
            )
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        connected
            .recv()
            .map_err(|_| StoreError::Connection("the client thread ended".into()))??;
        Ok(Self { requests })
    }

    fn ask(&self, work: Work, sql: &str, values: &[Value<'_>]) -> Result<Answer, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let request = Request {
            work,
            sql: sql.to_string(),
            values: values.iter().map(|v| Cell::owned(*v)).collect(),
            reply,
        };
        let gone = || StoreError::Connection("the client thread ended".into());
        self.requests.send(request).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

/// The client thread: answers requests until the [`Db`] is dropped.
fn serve(mut client: postgres::Client, inbox: mpsc::Receiver<Request>) {
    // Prepared once per statement text; the texts are the store's constants.
    let mut prepared: HashMap<String, postgres::Statement> = HashMap::new();
    for request in inbox {
        let answer = answer(&mut client, &mut prepared, &request);
        let _ = request.reply.send(answer);
    }
}

fn answer(
    client: &mut postgres::Client,
    prepared: &mut HashMap<String, postgres::Statement>,
    request: &Request,
) -> Result<Answer, StoreError> {
    if let Work::Batch = request.work {
        client.batch_execute(&request.sql)?;
        return Ok(Answer::Done);
    }
    let statement = match prepared.get(&request.sql) {
        Some(statement) => statement.clone(),
        None => {
            let statement = client.prepare(&dollar_placeholders(&request.sql))?;
            prepared.insert(request.sql.clone(), statement.clone());
            statement
        }
    };
    let bound: Vec<Bound<'_>> = request.values.iter().map(|c| Bound(c.value())).collect();
    let args: Vec<&(dyn postgres::types::ToSql + Sync)> = bound.iter().map(|b| b as _).collect();
    match request.work {
        Work::Execute => Ok(Answer::Changed(client.execute(&statement, &args)?)),
        _ => {
            let rows = client.query(&statement, &args)?;
            let cells = rows
                .iter()
                .map(|row| (0..row.len()).map(|i| row.try_get::<_, Cell>(i)).collect())
                .collect::<Result<Vec<Vec<Cell>>, _>>()?;
            Ok(Answer::Rows(cells))
        }
    }
}

/// A transaction in progress; the [`Db`] it runs on is reached through it.
#[derive(Debug)]
pub struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        self.db.in_transaction.set(false);
        self.db.execute_batch("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            self.db.in_transaction.set(false);
            // A failed rollback leaves nothing to undo: the connection's
            // transaction is gone either way.
            if let Err(e) = self.db.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a transaction failed");
            }
        }
    }
}

/// `query_row`'s "no row" as `None`, as rusqlite's `OptionalExtension`.
pub trait Optional<T> {
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> Optional<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(StoreError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `?1` as `$1`, a bare `?` as the next number; text in quotes untouched.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    out.push_str(&next.to_string());
                    next += 1;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT ?1, ?12 WHERE a = '?' AND b = ? AND c = ?"),
            "SELECT $1, $12 WHERE a = '?' AND b = $1 AND c = $2"
        );
    }

    #[test]
    fn values_read_back_strictly() {
        assert_eq!(i64::from_value(Value::Int(7)), Ok(7));
        assert!(u32::from_value(Value::Int(-1)).is_err());
        assert!(String::from_value(Value::Int(1)).is_err());
        assert_eq!(Option::<String>::from_value(Value::Null), Ok(None));
        assert_eq!(bool::from_value(Value::Int(1)), Ok(true));
    }
}
