//! `GET /admin/backup/database`: a consistent copy of the gateway's SQLite database, taken while
//! decisions go on, for `meshguard-bundle backup`.
//!
//! SQLite's `VACUUM INTO` writes a transactionally consistent copy from a read transaction of
//! its own (writers carry on under WAL), into a file beside the database; the file is opened,
//! unlinked and streamed, so nothing is left behind whatever happens to the request. The audit
//! log's entries are not taken from here: the backup pulls them, verified against signed
//! checkpoints, as the audit archive does, after this copy (so they cover every entry its index
//! holds). On a gateway of a PostgreSQL control plane this file holds only what stays local (the
//! audit log's index, the sidecars); the control plane is the database's own tools' to back up.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Admin;
use crate::config::Config;
use crate::error::ApiError;

/// Bytes read from the copy per chunk of the response.
const CHUNK: usize = 1 << 20;

pub(super) async fn database(
    _: Admin,
    State(config): State<std::sync::Arc<Config>>,
) -> Result<Response, ApiError> {
    let db = config.db_path.clone();
    let file = tokio::task::spawn_blocking(move || snapshot(&db))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "database backup failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backup_failed",
                format!("the database could not be copied: {e}"),
            )
        })?;
    let size = file.metadata().map_err(ApiError::internal)?.len();
    let file = tokio::fs::File::from_std(file);
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((axum::body::Bytes::from(buf), file)))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.sqlite3"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `VACUUM INTO` a file beside `db`; returns it opened for reading, already unlinked.
fn snapshot(db: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let target = db.with_file_name(format!(
        ".{}.backup-{}",
        db.file_name().unwrap_or_default().to_string_lossy(),
        crate::ids::new_id("b")
    ));
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let copied = conn.execute("VACUUM INTO ?1", [target.to_string_lossy()]);
    let opened = copied
        .map_err(anyhow::Error::from)
        .and_then(|_| std::fs::File::open(&target).map_err(anyhow::Error::from));
    // Unlinked whatever happened: an open file stays readable; a failed copy leaves nothing.
    let _ = std::fs::remove_file(&target);
    opened
}
