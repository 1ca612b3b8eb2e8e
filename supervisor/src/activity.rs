//! What the console charts: SCIM requests, errors and connector restarts per minute over the
//! last hours, counted in memory (this supervisor's own; Prometheus keeps the long history).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Minutes kept.
pub const MINUTES: usize = 6 * 60;

/// One minute's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub requests: u64,
    /// Answers 400 and above.
    pub errors: u64,
    pub restarts: u64,
}

/// The counts of the last [`MINUTES`] minutes.
#[derive(Debug, Default)]
pub struct Activity {
    minutes: Mutex<VecDeque<Minute>>,
}

fn this_minute() -> i64 {
    crate::store::now_ms() / 60_000
}

impl Activity {
    fn with_minute(&self, minute: i64, update: impl FnOnce(&mut Minute)) {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if minutes.back().is_none_or(|m| m.minute < minute) {
            minutes.push_back(Minute { minute, ..Default::default() });
            while minutes.len() > MINUTES {
                minutes.pop_front();
            }
        }
        if let Some(m) = minutes.iter_mut().rev().find(|m| m.minute == minute) {
            update(m);
        }
    }

    /// Counts a SCIM request and its status.
    pub fn request(&self, status: u16) {
        self.with_minute(this_minute(), |m| {
            m.requests += 1;
            if status >= 400 {
                m.errors += 1;
            }
        });
    }

    /// Counts connector restarts.
    pub fn restarts(&self, count: u64) {
        if count > 0 {
            self.with_minute(this_minute(), |m| m.restarts += count);
        }
    }

    /// The last `minutes` minutes, oldest first, one entry per minute (zeros where nothing
    /// happened).
    pub fn last(&self, minutes: usize) -> Vec<Minute> {
        self.last_at(this_minute(), minutes)
    }

    fn last_at(&self, now: i64, minutes: usize) -> Vec<Minute> {
        let kept = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let minutes = minutes.min(MINUTES) as i64;
        (now - minutes + 1..=now)
            .map(|minute| {
                kept.iter()
                    .find(|m| m.minute == minute)
                    .copied()
                    .unwrap_or(Minute { minute, ..Default::default() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_count_requests_errors_and_restarts_and_fill_gaps() {
        let activity = Activity::default();
        activity.with_minute(100, |m| m.requests += 3);
        activity.with_minute(102, |m| {
            m.requests += 1;
            m.errors += 1
        });
        activity.with_minute(102, |m| m.restarts += 2);
        let last = activity.last_at(103, 5);
        assert_eq!(last.iter().map(|m| m.minute).collect::<Vec<_>>(), vec![99, 100, 101, 102, 103]);
        assert_eq!(last.iter().map(|m| m.requests).collect::<Vec<_>>(), vec![0, 3, 0, 1, 0]);
        assert_eq!(last[3], Minute { minute: 102, requests: 1, errors: 1, restarts: 2 });
    }

    #[test]
    fn only_the_last_hours_are_kept() {
        let activity = Activity::default();
        for minute in 0..(MINUTES as i64 + 10) {
            activity.with_minute(minute, |m| m.requests += 1);
        }
        assert_eq!(activity.minutes.lock().unwrap().len(), MINUTES);
        assert_eq!(activity.minutes.lock().unwrap().front().unwrap().minute, 10);
    }
}
