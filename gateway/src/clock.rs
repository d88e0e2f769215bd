//! Wall-clock formatting in the one timestamp shape the API uses.

use chrono::{DateTime, SecondsFormat, Utc};

/// ISO-8601 UTC with milliseconds and `Z`, e.g. `2026-01-25T18:00:00.000Z`.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}
