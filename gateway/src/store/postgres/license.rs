//! The installation's license records and the gateways' leases in PostgreSQL: what makes the
//! gateways sharing one database one installation (docs/adr/0004, docs/licensing.md).
//!
//! The installation id is made by the first gateway to migrate the database, under the
//! migration lock ([`create_installation_id`]); every gateway adopts it. A license installed
//! through any gateway is written with a change record (`kind = "license"`), so every follower
//! checks the license again within its bound. A gateway's lease row says it is serving; the
//! license's `maxGateways` counts the live ones, oldest first.

use std::time::Duration;

use postgres::Client;

use super::{PgStore, classify};
use crate::store::{ChangeDraft, StoreError};

/// Where a record's bytes are kept.
const GET: &str = "SELECT body FROM license_records WHERE name = $1";

impl PgStore {
    pub(crate) fn license_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(|c| c.query_opt(GET, &[&name]))?.map(|r| r.get(0)))
    }

    /// Replaces a record; with `change`, in one transaction with its change record (followers
    /// act on it), otherwise alone.
    pub(crate) fn put_license_record(
        &self,
        name: &str,
        body: &[u8],
        change: Option<&ChangeDraft>,
    ) -> Result<(), StoreError> {
        let now = crate::clock::now_rfc3339();
        let upsert = "INSERT INTO license_records (name, body, updated_at) VALUES ($1, $2, $3)
                      ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at";
        match change {
            Some(change) => self.write_with_change(change, |tx| {
                tx.execute(upsert, &[&name, &body, &now])
                    .map_err(|e| classify(&e))
            }),
            None => self.on_live(|c| c.execute(upsert, &[&name, &body, &now]).map(drop)),
        }
    }

    /// Stores `body` unless the record exists; returns what it holds.
    pub(crate) fn create_license_record(
        &self,
        name: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.on_live(|c| {
            insert_if_absent(c, name, body)?;
            c.query_one(GET, &[&name])?.try_get(0)
        })
    }

    pub(crate) fn remove_license_record(&self, name: &str) -> Result<(), StoreError> {
        self.on_live(|c| {
            c.execute("DELETE FROM license_records WHERE name = $1", &[&name])
                .map(drop)
        })
    }

    /// Renews this gateway's lease `lease_id` for `lease` (a lapsed lease starts again, at the
    /// back) and answers how many live gateways started before it, and how many are live.
    pub(crate) fn heartbeat(
        &self,
        lease_id: &str,
        lease: Duration,
    ) -> Result<(u64, u64), StoreError> {
        let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.on_live(|c| {
            let started: String = c
                .query_one(
                    "INSERT INTO gateway_leases (id, started_at, lease_until)
                     VALUES ($1, clock_timestamp(), clock_timestamp() + $2 * interval '1 millisecond')
                     ON CONFLICT (id) DO UPDATE SET
                        started_at = CASE WHEN gateway_leases.lease_until < clock_timestamp()
                                          THEN clock_timestamp() ELSE gateway_leases.started_at END,
                        lease_until = EXCLUDED.lease_until
                     RETURNING started_at::text",
                    &[&lease_id, &(ms as f64)],
                )?
                .try_get(0)?;
            let row = c.query_one(
                "SELECT count(*) FILTER (WHERE (started_at, id) < ($1::text::timestamptz, $2::text)),
                        count(*)
                 FROM gateway_leases WHERE lease_until >= clock_timestamp()",
                &[&started, &lease_id],
            )?;
            let (before, live): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            Ok((before as u64, live as u64))
        })
    }

    /// One call on a live connection, put back after.
    fn on_live<T>(
        &self,
        call: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut client = self.live()?;
        let out = call(&mut client).map_err(|e| classify(&e));
        self.put_back(client);
        out
    }
}

/// Made once per database, under the migration lock: the first gateway to migrate makes the
/// installation id and every later one finds it.
pub(super) fn create_installation_id(client: &mut Client) -> Result<(), postgres::Error> {
    let id = format!("inst_{}\n", hex::encode(rand::random::<[u8; 16]>()));
    insert_if_absent(client, "installation-id", id.as_bytes()).map(drop)
}

fn insert_if_absent(c: &mut Client, name: &str, body: &[u8]) -> Result<u64, postgres::Error> {
    c.execute(
        "INSERT INTO license_records (name, body, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
        &[&name, &body, &crate::clock::now_rfc3339()],
    )
}
