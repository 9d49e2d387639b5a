//! Run and task states, named once, with their legal transitions.
//!
//! The same transition tables are enforced by the database (triggers over the
//! `*_state_transitions` tables in the migrations); a test walks every pair against both
//! databases to keep the two in step.

use std::fmt;

macro_rules! states {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// Where a DAG run is in its life.
    RunState {
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

states! {
    /// Where a task instance is in its life. `Scheduled` is the state a task is created in: it
    /// waits for its upstreams; `Queued` means ready to be handed to an executor.
    TaskState {
        Scheduled => "scheduled",
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failed => "failed",
        UpForRetry => "up_for_retry",
        UpstreamFailed => "upstream_failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
}

states! {
    /// How one attempt of a task ended (`Running` while it runs; `Lost` when the process that
    /// ran it died and the reaper found it; `Rescheduled`: a sensor's poke that found nothing
    /// yet, its task waiting for the next).
    AttemptState {
        Running => "running",
        Success => "success",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
        Lost => "lost",
        Rescheduled => "rescheduled",
    }
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failed | RunState::Cancelled
        )
    }

    /// The legal edges of the run lifecycle.
    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Failed)
                | (Queued, Cancelled)
                | (Running, Success)
                | (Running, Failed)
                | (Running, Cancelled)
                // Clearing a task of a finished run runs it again (`crate::clear`).
                | (Success, Queued)
                | (Failed, Queued)
                | (Cancelled, Queued)
        )
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Cancelled
        )
    }

    /// The legal edges of the task lifecycle.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Scheduled, Queued)
                // Claimed by a worker's hand-off as it is found ready (`Store::claim_next`).
                | (Scheduled, Running)
                | (Scheduled, UpstreamFailed)
                | (Scheduled, Skipped)
                | (Scheduled, Cancelled)
                | (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Success)
                | (Running, Failed)
                | (Running, UpForRetry)
                | (Running, Cancelled)
                // Its `when: { sql }` was false when the attempt started.
                | (Running, Skipped)
                | (UpForRetry, Queued)
                | (UpForRetry, Cancelled)
                // The run passed its `run_timeout` before the task ran (again).
                | (Scheduled, Failed)
                | (Queued, Failed)
                | (UpForRetry, Failed)
                // Cleared: it runs again (`crate::clear`).
                | (Success, Scheduled)
                | (Failed, Scheduled)
                | (UpstreamFailed, Scheduled)
                | (Skipped, Scheduled)
                | (Cancelled, Scheduled)
        )
    }
}

impl AttemptState {
    pub fn is_terminal(self) -> bool {
        self != AttemptState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(*s));
        }
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(*s));
        }
    }

    #[test]
    fn terminal_states_are_left_only_by_clearing() {
        for from in TaskState::ALL.iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert_eq!(
                    from.can_become(*to),
                    *to == TaskState::Scheduled,
                    "{from} is terminal: only clearing ({from} -> scheduled) leaves it, not -> {to}"
                );
            }
        }
        for from in RunState::ALL.iter().filter(|s| s.is_terminal()) {
            for to in RunState::ALL {
                assert_eq!(
                    from.can_become(*to),
                    *to == RunState::Queued,
                    "{from} is terminal: only clearing ({from} -> queued) leaves it, not -> {to}"
                );
            }
        }
    }
}
