//! Rate limits: per client address (`RATE_LIMIT_RPM`) and per agent (a policy's `rateLimits`).
//!
//! Fixed one-minute and one-hour windows per key, in memory. A refused call answers 429 with
//! `Retry-After` (the seconds until its window ends) and raises a `rate_limit` alert.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: u64,
    in_minute: u32,
    hour: u64,
    in_hour: u32,
}

/// A refusal: when to retry and which limit was hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) retry_after: u64,
    pub(crate) limit: String,
}

/// Keys kept before old windows are pruned.
const PRUNE_AT: usize = 50_000;

impl RateLimiter {
    /// Counts one call for `key` at `now` (unix seconds); refuses it when a limit is reached.
    /// The key is only written out when a limit applies, so calls without one cost nothing.
    pub(crate) fn hit(
        &self,
        key: std::fmt::Arguments<'_>,
        per_minute: Option<u32>,
        per_hour: Option<u32>,
        now: u64,
    ) -> Result<(), Limited> {
        if per_minute.is_none() && per_hour.is_none() {
            return Ok(());
        }
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > PRUNE_AT {
            map.retain(|_, w| w.hour == now / 3600);
        }
        let w = map.entry(key.to_string()).or_default();
        if w.minute != now / 60 {
            w.minute = now / 60;
            w.in_minute = 0;
        }
        if w.hour != now / 3600 {
            w.hour = now / 3600;
            w.in_hour = 0;
        }
        if let Some(limit) = per_minute
            && w.in_minute >= limit
        {
            return Err(Limited {
                retry_after: 60 - now % 60,
                limit: format!("{limit} requests per minute"),
            });
        }
        if let Some(limit) = per_hour
            && w.in_hour >= limit
        {
            return Err(Limited {
                retry_after: 3600 - now % 3600,
                limit: format!("{limit} requests per hour"),
            });
        }
        w.in_minute += 1;
        w.in_hour += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_window_refuses_then_resets() {
        let l = RateLimiter::default();
        let t = 1_000_040; // 20 s into a minute
        assert!(l.hit(format_args!("a"), Some(2), None, t).is_ok());
        assert!(l.hit(format_args!("a"), Some(2), None, t + 1).is_ok());
        let refused = l.hit(format_args!("a"), Some(2), None, t + 2).unwrap_err();
        assert_eq!(
            refused,
            Limited {
                retry_after: 38,
                limit: "2 requests per minute".into()
            }
        );
        assert!(
            l.hit(format_args!("b"), Some(2), None, t + 2).is_ok(),
            "keys are separate"
        );
        assert!(
            l.hit(format_args!("a"), Some(2), None, t + 40).is_ok(),
            "next minute"
        );
    }

    #[test]
    fn the_hour_window_holds_across_minutes() {
        let l = RateLimiter::default();
        let t = 7200;
        assert!(l.hit(format_args!("a"), None, Some(1), t).is_ok());
        assert_eq!(
            l.hit(format_args!("a"), None, Some(1), t + 120)
                .unwrap_err()
                .limit,
            "1 requests per hour"
        );
        assert!(
            l.hit(format_args!("a"), None, None, t + 120).is_ok(),
            "no limit configured"
        );
    }
}
