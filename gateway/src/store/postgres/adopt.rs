//! Moving a site from SQLite to PostgreSQL: the first start of a gateway on an empty control
//! plane copies the control plane its own SQLite file holds (agents, policies, alert channels,
//! the change log with its sequence numbers, undelivered alerts and deliveries) into the
//! database, in one transaction under the write lock, so the site goes on with every object,
//! revision and change record it had. The audit log and its index stay in the local file, as on
//! every gateway of a shared control plane. Nothing is copied into a database that holds any
//! control-plane row: that database is another site's, or this one's already.
//!
//! Written here rather than with `pg_dump`/`pgloader`: the source is SQLite, the columns are
//! the same on both sides (PostgreSQL's migration 1 is SQLite's schema), and the copy must run
//! inside the gateway's own start, under its lock.

use postgres::types::ToSql;
use rusqlite::types::Value as Cell;

use super::PgStore;

/// The tables copied, in an order that respects nothing but readability (no foreign keys).
const TABLES: [&str; 6] = [
    "agents",
    "policies",
    "alert_channels",
    "changes",
    "alert_failures",
    "alert_deliveries",
];

/// What a copy moved, table by table.
pub(crate) type Moved = Vec<(&'static str, usize)>;

impl PgStore {
    /// Copies the local SQLite control plane into this database when the database holds none
    /// and the file holds some; `None` when nothing was copied.
    pub(crate) fn adopt_local_control_plane(&self) -> Result<Option<Moved>, String> {
        let mut client = self.live().map_err(|e| e.to_string())?;
        let out = (|| -> Result<Option<Moved>, String> {
            let mut tx = client.transaction().map_err(|e| super::error_text(&e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::WRITE_LOCK])
                .map_err(|e| super::error_text(&e))?;
            if !database_is_empty(&mut tx)? {
                return Ok(None);
            }
            let mut moved = Vec::new();
            for table in TABLES {
                let columns = columns_of(&mut tx, table)?;
                let rows = self.local.rows_of(table, &columns)?;
                insert_rows(&mut tx, table, &columns, &rows)?;
                moved.push((table, rows.len()));
            }
            if moved.iter().all(|(_, n)| *n == 0) {
                return Ok(None);
            }
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('changes', 'seq'), COALESCE(MAX(seq), 0) + 1, false) FROM changes",
            )
            .map_err(|e| super::error_text(&e))?;
            tx.commit().map_err(|e| super::error_text(&e))?;
            Ok(Some(moved))
        })();
        self.put_back(client);
        out.map_err(|e| {
            format!(
                "cannot copy this gateway's SQLite control plane into {}: {e}; nothing was copied",
                self.shown
            )
        })
    }
}

fn database_is_empty(tx: &mut postgres::Transaction<'_>) -> Result<bool, String> {
    let sql = "SELECT NOT EXISTS (SELECT 1 FROM agents) AND NOT EXISTS (SELECT 1 FROM policies)
               AND NOT EXISTS (SELECT 1 FROM alert_channels) AND NOT EXISTS (SELECT 1 FROM changes)";
    tx.query_one(sql, &[])
        .map(|r| r.get(0))
        .map_err(|e| super::error_text(&e))
}

/// A column and whether PostgreSQL keeps it as an integer (`BIGINT`) or text.
pub(crate) type Column = (String, bool);

fn columns_of(tx: &mut postgres::Transaction<'_>, table: &str) -> Result<Vec<Column>, String> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type = 'bigint' FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .map_err(|e| super::error_text(&e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn insert_rows(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    columns: &[Column],
    rows: &[Vec<Cell>],
) -> Result<(), String> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    );
    let statement = tx.prepare(&sql).map_err(|e| super::error_text(&e))?;
    for row in rows {
        let params = row
            .iter()
            .zip(columns)
            .map(|(cell, (name, integer))| param(cell, *integer, table, name))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        tx.execute(&statement, &refs)
            .map_err(|e| format!("{table}: {}", super::error_text(&e)))?;
    }
    Ok(())
}

/// One SQLite cell as the PostgreSQL column's type takes it.
fn param(
    cell: &Cell,
    integer: bool,
    table: &str,
    column: &str,
) -> Result<Box<dyn ToSql + Sync>, String> {
    Ok(match (cell, integer) {
        (Cell::Null, true) => Box::new(None::<i64>),
        (Cell::Null, false) => Box::new(None::<String>),
        (Cell::Integer(i), true) => Box::new(*i),
        (Cell::Text(t), false) => Box::new(t.clone()),
        (other, _) => {
            return Err(format!(
                "{table}.{column} holds {other:?}, which its PostgreSQL column does not take"
            ));
        }
    })
}
