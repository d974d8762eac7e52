//! The query layer both backends share. Every statement is written once, with `$N`
//! placeholders (SQLite and PostgreSQL both accept them), `ON CONFLICT` and `RETURNING`;
//! values are bound as [`Value`]s and rows read through [`Row`], each turned into the
//! backend's own types only when the statement runs. The one type that differs is the
//! id: `uuid` in PostgreSQL, hyphenated text in SQLite, and only this module knows it.
//!
//! Where the dialects do differ (a row lock), the caller says so with [`Sql::locking`].

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use dash_core::config::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::types::Json;
use sqlx::{Arguments as _, Row as _};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::StoreResult;

/// A value bound to a statement, kept backend-neutral until the statement runs.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Id(Option<Uuid>),
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Time(Option<DateTime<Utc>>),
    Json(Option<Box<RawValue>>),
    /// A value that could not be serialised; the statement fails with this reason.
    Invalid(String),
}

impl From<Uuid> for Value {
    fn from(id: Uuid) -> Self {
        Value::Id(Some(id))
    }
}

impl From<Option<Uuid>> for Value {
    fn from(id: Option<Uuid>) -> Self {
        Value::Id(id)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(Some(text.to_owned()))
    }
}

impl From<&String> for Value {
    fn from(text: &String) -> Self {
        Value::Text(Some(text.clone()))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(Some(text))
    }
}

impl From<Option<&str>> for Value {
    fn from(text: Option<&str>) -> Self {
        Value::Text(text.map(str::to_owned))
    }
}

impl From<&Option<String>> for Value {
    fn from(text: &Option<String>) -> Self {
        Value::Text(text.clone())
    }
}

impl From<Option<String>> for Value {
    fn from(text: Option<String>) -> Self {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(Some(value))
    }
}

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(Some(value))
    }
}

impl From<Option<bool>> for Value {
    fn from(value: Option<bool>) -> Self {
        Value::Bool(value)
    }
}

impl From<DateTime<Utc>> for Value {
    fn from(at: DateTime<Utc>) -> Self {
        Value::Time(Some(at))
    }
}

impl From<Option<DateTime<Utc>>> for Value {
    fn from(at: Option<DateTime<Utc>>) -> Self {
        Value::Time(at)
    }
}

impl<T: Serialize> From<Json<T>> for Value {
    fn from(json: Json<T>) -> Self {
        match serde_json::value::to_raw_value(&json.0) {
            Ok(raw) => Value::Json(Some(raw)),
            Err(err) => Value::Invalid(format!("cannot serialise a JSON value: {err}")),
        }
    }
}

impl Value {
    /// NULL of the same type.
    fn null(&self) -> Value {
        match self {
            Value::Id(_) => Value::Id(None),
            Value::Text(_) => Value::Text(None),
            Value::Int(_) => Value::Int(None),
            Value::Bool(_) => Value::Bool(None),
            Value::Time(_) => Value::Time(None),
            Value::Json(_) => Value::Json(None),
            Value::Invalid(reason) => Value::Invalid(reason.clone()),
        }
    }
}

/// One statement with its bound values.
#[must_use = "a statement does nothing until it is run"]
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    /// Static text, or text assembled by [`sql_rows`] from static fragments only.
    text: Cow<'static, str>,
    /// Appended in PostgreSQL only: a row lock SQLite does not need (its write
    /// transactions already exclude every other writer).
    lock: Option<&'static str>,
    values: Vec<Value>,
    /// For a multi-row statement: the NULL rows that fill it up to its shape.
    padding: Option<Padding>,
}

/// Where a statement's row lock goes when it belongs inside the text (a sub-select's),
/// not at its end: see [`Sql::locking`].
pub(crate) const LOCK_HERE: &str = "/* lock */";

/// A statement, written once for both backends.
pub(crate) fn sql(text: &'static str) -> Sql {
    Sql {
        text: Cow::Borrowed(text),
        lock: None,
        values: Vec::new(),
        padding: None,
    }
}

/// Rows one multi-row statement carries, at most; a longer batch is cut into chunks of
/// this size.
pub(crate) const MAX_ROWS: usize = 256;

/// Row counts a multi-row statement is padded up to: every such statement has one of
/// these few shapes, so each backend prepares (and caches) a handful of them however
/// the batch sizes vary, and a batch of up to [`MAX_ROWS`] is one statement.
const ROW_SHAPES: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, MAX_ROWS];

/// A statement over many rows in one round trip (an `INSERT ... SELECT ... FROM
/// (VALUES ...)`, an `UPDATE ... FROM (VALUES ...)`): `head`, then `row` repeated,
/// separated by commas, then `tail`. `head` and `tail` may use `$1..$h`, bound first;
/// `row` uses `$1..$k` for one row's values, renumbered after `$h` for each row, whose
/// values are bound next, row after row; `count` rows (1 to [`MAX_ROWS`]) are bound.
///
/// The row list is padded with all-NULL rows up to the next of a few fixed shapes, so
/// the statement must skip a row whose first column is NULL: an `UPDATE` that matches
/// on `v.column1` does by itself; an `INSERT` selects `FROM (VALUES ...) AS v WHERE
/// v.column1 IS NOT NULL`. The text is built from the static fragments only.
pub(crate) fn sql_rows(
    head: &'static str,
    row: &'static str,
    count: usize,
    tail: &'static str,
) -> Sql {
    let shape = ROW_SHAPES
        .into_iter()
        .find(|shape| *shape >= count)
        .unwrap_or(count);
    let shared = highest_placeholder(head).max(highest_placeholder(tail));
    let per_row = highest_placeholder(row);
    let mut text = String::with_capacity(head.len() + tail.len() + (row.len() + 8) * shape);
    text.push_str(head);
    for n in 0..shape {
        if n > 0 {
            text.push_str(", ");
        }
        renumber(row, shared + n * per_row, &mut text);
    }
    text.push_str(tail);
    Sql {
        text: Cow::Owned(text),
        lock: None,
        values: Vec::new(),
        padding: Some(Padding {
            first_row: shared,
            per_row,
            rows: shape,
        }),
    }
}

/// The NULL rows a multi-row statement still needs after its bound ones.
#[derive(Debug, Clone, Copy)]
struct Padding {
    /// Values bound before the first row (those of `head` and `tail`).
    first_row: usize,
    per_row: usize,
    /// Rows in the statement's text.
    rows: usize,
}

/// The highest `$N` in a fragment (0 when there is none).
fn highest_placeholder(text: &str) -> usize {
    let mut highest = 0;
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = rest[..digits].parse::<usize>() {
            highest = highest.max(n);
        }
        rest = &rest[digits..];
    }
    highest
}

/// Appends `fragment` with each `$N` turned into `$(N + offset)`.
fn renumber(fragment: &str, offset: usize, out: &mut String) {
    let mut rest = fragment;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

/// Where a statement runs: a pool (reads) or a connection (a transaction's statements).
pub(crate) enum Exec<'c> {
    SqlitePool(&'c SqlitePool),
    PgPool(&'c PgPool),
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Sql {
    /// Binds the next `$N`.
    pub(crate) fn bind(mut self, value: impl Into<Value>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Adds a row-lock clause (`FOR UPDATE`, `FOR UPDATE OF b`, `FOR UPDATE OF m SKIP
    /// LOCKED`) when the statement runs in a PostgreSQL transaction: in place of the
    /// text's [`LOCK_HERE`] marker (a sub-select's lock) if it has one, else at its end.
    /// A read from the pool has nothing to hold the lock for; in SQLite the marker
    /// stays the comment it is.
    pub(crate) fn locking(mut self, clause: &'static str) -> Self {
        self.lock = Some(clause);
        self
    }

    /// Runs the statement; returns the number of rows it changed.
    pub(crate) async fn execute<'c>(self, exec: impl Into<Exec<'c>>) -> Result<u64, sqlx::Error> {
        Ok(match exec.into() {
            Exec::SqlitePool(pool) => self.sqlite()?.execute(pool).await?.rows_affected(),
            Exec::Sqlite(conn) => self.sqlite()?.execute(conn).await?.rows_affected(),
            Exec::PgPool(pool) => self.postgres(false)?.execute(pool).await?.rows_affected(),
            Exec::Postgres(conn) => self.postgres(true)?.execute(conn).await?.rows_affected(),
        })
    }

    /// Every row the statement returns.
    pub(crate) async fn fetch_all<'c>(
        self,
        exec: impl Into<Exec<'c>>,
    ) -> Result<Vec<Row>, sqlx::Error> {
        Ok(match exec.into() {
            Exec::SqlitePool(pool) => rows(self.sqlite()?.fetch_all(pool).await?, Row::Sqlite),
            Exec::Sqlite(conn) => rows(self.sqlite()?.fetch_all(conn).await?, Row::Sqlite),
            Exec::PgPool(pool) => rows(self.postgres(false)?.fetch_all(pool).await?, Row::Postgres),
            Exec::Postgres(conn) => {
                rows(self.postgres(true)?.fetch_all(conn).await?, Row::Postgres)
            }
        })
    }

    /// The first row, if any.
    pub(crate) async fn fetch_optional<'c>(
        self,
        exec: impl Into<Exec<'c>>,
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(match exec.into() {
            Exec::SqlitePool(pool) => self.sqlite()?.fetch_optional(pool).await?.map(Row::Sqlite),
            Exec::Sqlite(conn) => self.sqlite()?.fetch_optional(conn).await?.map(Row::Sqlite),
            Exec::PgPool(pool) => self
                .postgres(false)?
                .fetch_optional(pool)
                .await?
                .map(Row::Postgres),
            Exec::Postgres(conn) => self
                .postgres(true)?
                .fetch_optional(conn)
                .await?
                .map(Row::Postgres),
        })
    }

    /// Runs the statement as a write of its own: on SQLite in a transaction on the
    /// queued writer, on PostgreSQL as one statement (atomic on its own, no `BEGIN`
    /// and `COMMIT` round trips). Returns the number of rows it changed.
    pub(crate) async fn write(self, pool: &Pool) -> StoreResult<u64> {
        match pool {
            Pool::Sqlite(db) => {
                let mut tx = Tx::Sqlite(db.write().await?);
                let changed = self.execute(&mut tx).await?;
                tx.commit().await?;
                Ok(changed)
            }
            Pool::Postgres(pool) => Ok(self.execute(Exec::PgPool(pool)).await?),
        }
    }

    /// The first row; `RowNotFound` when there is none.
    pub(crate) async fn fetch_one<'c>(self, exec: impl Into<Exec<'c>>) -> Result<Row, sqlx::Error> {
        self.fetch_optional(exec)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// The first column of the first row.
    pub(crate) async fn fetch_scalar<'c, T: Column>(
        self,
        exec: impl Into<Exec<'c>>,
    ) -> Result<T, sqlx::Error> {
        self.fetch_one(exec).await?.try_get(0)
    }

    /// The first column of the first row, if there is a row.
    pub(crate) async fn fetch_optional_scalar<'c, T: Column>(
        self,
        exec: impl Into<Exec<'c>>,
    ) -> Result<Option<T>, sqlx::Error> {
        self.fetch_optional(exec)
            .await?
            .map(|row| row.try_get(0))
            .transpose()
    }

    /// Appends a multi-row statement's NULL rows: each a row of NULLs of the first
    /// row's types (PostgreSQL types a `VALUES` column from its rows).
    fn pad(&mut self) -> Result<(), sqlx::Error> {
        let Some(padding) = self.padding.take() else {
            return Ok(());
        };
        let bound = self.values.len().saturating_sub(padding.first_row);
        let rows = bound.checked_div(padding.per_row).unwrap_or(0);
        if padding.per_row == 0 || bound % padding.per_row != 0 || rows == 0 || rows > padding.rows
        {
            return Err(sqlx::Error::Encode(
                format!(
                    "a multi-row statement of {} rows got {bound} values for rows of {}",
                    padding.rows, padding.per_row
                )
                .into(),
            ));
        }
        let first = padding.first_row..padding.first_row + padding.per_row;
        let nulls: Vec<Value> = self.values[first].iter().map(Value::null).collect();
        for _ in rows..padding.rows {
            self.values.extend_from_slice(&nulls);
        }
        Ok(())
    }

    fn sqlite(
        mut self,
    ) -> Result<sqlx::query::Query<'static, sqlx::Sqlite, SqliteArguments>, sqlx::Error> {
        let mut args = SqliteArguments::default();
        self.pad()?;
        for value in self.values {
            match value {
                Value::Id(id) => args.add(id.map(Uuid::hyphenated)),
                Value::Text(text) => args.add(text),
                Value::Int(int) => args.add(int),
                Value::Bool(value) => args.add(value),
                Value::Time(at) => args.add(at),
                Value::Json(raw) => args.add(raw.map(Json)),
                Value::Invalid(reason) => return Err(sqlx::Error::Encode(reason.into())),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(match self.text {
            Cow::Borrowed(text) => sqlx::query_with(text, args),
            Cow::Owned(text) => sqlx::query_with(sqlx::AssertSqlSafe(text), args),
        })
    }

    fn postgres(
        mut self,
        in_transaction: bool,
    ) -> Result<sqlx::query::Query<'static, sqlx::Postgres, PgArguments>, sqlx::Error> {
        let mut args = PgArguments::default();
        self.pad()?;
        for value in self.values {
            match value {
                Value::Id(id) => args.add(id),
                Value::Text(text) => args.add(text),
                Value::Int(int) => args.add(int),
                Value::Bool(value) => args.add(value),
                Value::Time(at) => args.add(at),
                Value::Json(raw) => args.add(raw.map(Json)),
                Value::Invalid(reason) => return Err(sqlx::Error::Encode(reason.into())),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(match (self.lock.filter(|_| in_transaction), self.text) {
            (None, Cow::Borrowed(text)) => sqlx::query_with(text, args),
            (None, Cow::Owned(text)) => sqlx::query_with(sqlx::AssertSqlSafe(text), args),
            (Some(lock), text) if text.contains(LOCK_HERE) => {
                sqlx::query_with(sqlx::AssertSqlSafe(text.replace(LOCK_HERE, lock)), args)
            }
            (Some(lock), text) => {
                sqlx::query_with(sqlx::AssertSqlSafe(format!("{text} {lock}")), args)
            }
        })
    }
}

fn rows<R>(found: Vec<R>, wrap: fn(R) -> Row) -> Vec<Row> {
    found.into_iter().map(wrap).collect()
}

/// A row from either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A column named or numbered, in either backend's rows.
pub(crate) trait Index:
    sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug + Copy
{
}

impl<T: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug + Copy> Index
    for T
{
}

impl Row {
    /// One column, decoded as `T`.
    pub(crate) fn try_get<T: Column>(&self, index: impl Index) -> Result<T, sqlx::Error> {
        match self {
            Row::Sqlite(row) => T::from_sqlite(row, index),
            Row::Postgres(row) => T::from_postgres(row, index),
        }
    }
}

/// A Rust type a column decodes to in both backends.
pub(crate) trait Column: Sized {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error>;
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error>;
}

/// Types that both drivers decode the same way.
macro_rules! same_in_both {
    ($($ty:ty),* $(,)?) => {
        $(impl Column for $ty {
            fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
                row.try_get(index)
            }
            fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
                row.try_get(index)
            }
        })*
    };
}

same_in_both!(
    String,
    Option<String>,
    bool,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Vec<u8>,
);

impl Column for Option<Uuid> {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
        Ok(row
            .try_get::<Option<Hyphenated>, _>(index)?
            .map(Hyphenated::into_uuid))
    }
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
}

impl Column for Uuid {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
        Option::<Uuid>::from_sqlite(row, index)?.ok_or_else(|| null_column(index))
    }
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
}

/// Integers: `INTEGER` columns are 64-bit in SQLite, and either `int4` or `int8` in
/// PostgreSQL, both read as `i64`.
impl Column for Option<i64> {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
        match row.try_get::<Option<i64>, _>(index) {
            Err(sqlx::Error::ColumnDecode { .. }) => {
                Ok(row.try_get::<Option<i32>, _>(index)?.map(i64::from))
            }
            other => other,
        }
    }
}

impl Column for i64 {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
        Option::<i64>::from_postgres(row, index)?.ok_or_else(|| null_column(index))
    }
}

impl<T: DeserializeOwned> Column for Json<T> {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
}

impl<T: DeserializeOwned> Column for Option<Json<T>> {
    fn from_sqlite(row: &SqliteRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
    fn from_postgres(row: &PgRow, index: impl Index) -> Result<Self, sqlx::Error> {
        row.try_get(index)
    }
}

fn null_column(index: impl Index) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: format!("{index:?}"),
        source: "unexpected NULL".into(),
    }
}

/// Both backends' pools: the store's one handle on its database.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(super::sqlite::SqliteDb),
    Postgres(PgPool),
}

impl Pool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Begins a write transaction: SQLite's `BEGIN IMMEDIATE` on the one queued writer,
    /// PostgreSQL's `BEGIN`.
    pub(crate) async fn write(&self) -> StoreResult<Tx> {
        Ok(match self {
            Pool::Sqlite(db) => Tx::Sqlite(db.write().await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl<'c> From<&'c Pool> for Exec<'c> {
    fn from(pool: &'c Pool) -> Self {
        match pool {
            Pool::Sqlite(db) => Exec::SqlitePool(db.pool()),
            Pool::Postgres(pool) => Exec::PgPool(pool),
        }
    }
}

/// A write transaction on either backend. Dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    Sqlite(super::sqlite::SqliteTx),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

impl<'c> From<&'c mut Tx> for Exec<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        match tx {
            Tx::Sqlite(tx) => Exec::Sqlite(tx),
            Tx::Postgres(tx) => Exec::Postgres(tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_numbered_after_the_shared_values_and_padded_to_a_shape() {
        let statement = sql_rows(
            "UPDATE t SET a = v.column2, at = $1 FROM (VALUES ",
            "($1, $2)",
            3,
            ") AS v WHERE t.id = v.column1 AND t.b <> $2",
        );
        assert_eq!(
            statement.text,
            "UPDATE t SET a = v.column2, at = $1 FROM (VALUES ($3, $4), ($5, $6), ($7, $8), \
             ($9, $10)) AS v WHERE t.id = v.column1 AND t.b <> $2"
        );
        let insert = sql_rows(
            "INSERT INTO t (a, b) SELECT v.column1, v.column2 FROM (VALUES ",
            "($1, $2)",
            2,
            ") AS v WHERE v.column1 IS NOT NULL",
        );
        assert_eq!(
            insert.text,
            "INSERT INTO t (a, b) SELECT v.column1, v.column2 FROM (VALUES ($1, $2), ($3, $4)) \
             AS v WHERE v.column1 IS NOT NULL"
        );
    }

    #[test]
    fn padding_rows_are_nulls_of_the_first_rows_types() {
        let mut statement = sql_rows("UPDATE t SET at = $1 FROM (VALUES ", "($1, $2)", 5, ")")
            .bind(7_i64)
            .bind(Uuid::nil())
            .bind("a");
        for _ in 1..5 {
            statement = statement.bind(Uuid::nil()).bind("b");
        }
        statement.pad().unwrap();
        // 5 rows bound, padded to 8: 3 rows of (uuid NULL, text NULL).
        assert_eq!(statement.values.len(), 1 + 8 * 2);
        for null in statement.values[11..].chunks(2) {
            assert!(
                matches!(null, [Value::Id(None), Value::Text(None)]),
                "{null:?}"
            );
        }
        // A row short of its values is refused, not padded into a wrong statement.
        let mut short = sql_rows("INSERT INTO t (a, b) VALUES ", "($1, $2)", 2, "")
            .bind(Uuid::nil())
            .bind("a")
            .bind(Uuid::nil());
        assert!(short.pad().is_err());
    }

    #[test]
    fn every_batch_size_gets_a_fixed_shape() {
        for count in 1..=MAX_ROWS {
            let shape = ROW_SHAPES.into_iter().find(|s| *s >= count).unwrap();
            assert!(shape < 2 * count, "{count} -> {shape}");
        }
    }
}
