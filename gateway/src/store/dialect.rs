//! Where SQLite and PostgreSQL differ, for the statements both stores run (`tables.rs`).
//!
//! The shared statements are written once, in SQLite's spelling of parameters (`?1`, `?2`, …),
//! and in SQL both databases read the same way:
//! - parameters: [`postgres`] turns `?N` into PostgreSQL's `$N`;
//! - a parameter compared with NULL is written `CAST(?N AS TEXT)`, which PostgreSQL needs to
//!   know its type and SQLite reads as the value itself;
//! - upserts are `INSERT … ON CONFLICT (…) DO UPDATE SET … = excluded.…` in both (SQLite since
//!   3.24; the bundled one is newer);
//! - values are bound as a [`Param`] (text or a 64-bit integer, either possibly NULL) and rows
//!   are read through [`Cells`]: one small implementation of each per driver, here.
//!
//! What is not in this file: the migrations, which stay as they shipped in each store (`INTEGER`
//! against `BIGINT`, `AUTOINCREMENT` against `BIGSERIAL`; existing databases migrate by them),
//! and how a write is serialized (SQLite: one connection behind a mutex; PostgreSQL: a
//! transaction-scoped advisory lock and a `NOTIFY`), which is each store's `write_with_change`.

use super::StoreError;

/// A shared statement as PostgreSQL spells it: `?N` becomes `$N` (SQLite runs it as written).
/// The shared statements hold no `?` but their parameters.
pub(super) fn postgres(shared: &str) -> String {
    shared.replace('?', "$")
}

/// A value bound to a statement: what the stores' columns hold (JSON is text).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(Some(v.to_owned()))
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param::Text(Some(v.clone()))
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(Some(v))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Param::Text(v)
    }
}

impl From<&Option<String>> for Param {
    fn from(v: &Option<String>) -> Self {
        Param::Text(v.clone())
    }
}

impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Self {
        Param::Text(v.map(str::to_owned))
    }
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(v) => v.to_sql(),
            Param::Int(v) => v.to_sql(),
        }
    }
}

impl Param {
    /// The value as the PostgreSQL driver binds it.
    pub(super) fn pg(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Param::Text(v) => v,
            Param::Int(v) => v,
        }
    }
}

/// One result row, read by column index: what the shared row mappings need of a driver.
pub(super) trait Cells {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
}

fn unreadable(i: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("column {i} of a stored row cannot be read: {e}"))
}

impl Cells for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.get(i).map_err(|e| unreadable(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.get(i).map_err(|e| unreadable(i, e))
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.get(i).map_err(|e| unreadable(i, e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.get(i).map_err(|e| unreadable(i, e))
    }
}

impl Cells for postgres::Row {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.try_get(i).map_err(|e| unreadable(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.try_get(i).map_err(|e| unreadable(i, e))
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(|e| unreadable(i, e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(|e| unreadable(i, e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_numbers_its_parameters_with_a_dollar() {
        assert_eq!(
            super::postgres(
                "UPDATE t SET a = ?2 WHERE id = ?1 AND (CAST(?3 AS TEXT) IS NULL OR b = ?3)"
            ),
            "UPDATE t SET a = $2 WHERE id = $1 AND (CAST($3 AS TEXT) IS NULL OR b = $3)"
        );
    }
}
