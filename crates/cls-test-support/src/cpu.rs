//! Where a benchmark's CPU went: the machine's busy time and each command's, read from
//! `/proc` (Linux) before and after the measured stretch.

use std::collections::HashMap;
use std::fmt::Write as _;

/// CPU time used so far, in clock ticks: the machine's busy time and each command's.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    busy: u64,
    by_command: HashMap<String, u64>,
}

/// Clock ticks per second (`USER_HZ`; 100 on every Linux platform this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

impl Usage {
    /// The counters now. Processes that exit in between are not counted.
    pub fn now() -> Usage {
        let mut usage = Usage::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat")
            && let Some(cpu) = stat.lines().next()
        {
            usage.busy = busy_ticks(cpu);
        }
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && let Some((command, ticks)) = process_ticks(&stat)
            {
                *usage.by_command.entry(command.to_owned()).or_default() += ticks;
            }
        }
        usage
    }

    /// What was used from `earlier` until `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            busy: self.busy.saturating_sub(earlier.busy),
            by_command: self
                .by_command
                .iter()
                .map(|(command, ticks)| {
                    let before = earlier.by_command.get(command).copied().unwrap_or(0);
                    (command.clone(), ticks.saturating_sub(before))
                })
                .collect(),
        }
    }

    /// Adds another stretch's use (from [`Usage::since`]).
    pub fn add(&mut self, other: &Usage) {
        self.busy += other.busy;
        for (command, ticks) in &other.by_command {
            *self.by_command.entry(command.clone()).or_default() += ticks;
        }
    }

    /// This use (from [`Usage::since`]) as cores over `seconds`: in all, then for each
    /// `(command, label)`, e.g. `1.98 in all; postgres 1.10, emulator 0.40`. Ticks are
    /// sampled, so stretches much shorter than a second read coarsely.
    pub fn cores(&self, seconds: f64, commands: &[(&str, &str)]) -> String {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds.max(f64::EPSILON);
        let mut out = format!("{:.2} in all", cores(self.busy));
        for (i, (command, label)) in commands.iter().enumerate() {
            let ticks = self.by_command.get(*command).copied().unwrap_or(0);
            let sep = if i == 0 { "; " } else { ", " };
            let _ = write!(out, "{sep}{label} {:.2}", cores(ticks));
        }
        out
    }
}

/// This process's command name (as [`Usage`] groups it), e.g. `relay_bench`.
pub fn own_command() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// The busy ticks of a `/proc/stat` `cpu` line: all but idle and iowait.
fn busy_ticks(line: &str) -> u64 {
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    fields.iter().sum::<u64>().saturating_sub(idle)
}

/// The command and user + system ticks of a `/proc/<pid>/stat` line.
fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // After the command: the state (field 3), then fields 4 on; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ticks = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Some((stat.get(open + 1..close)?, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters_of_proc() {
        assert_eq!(
            busy_ticks("cpu  100 5 50 1000 20 3 2 7 0 0"),
            100 + 5 + 50 + 3 + 2 + 7
        );
        let stat =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 70 0 0 20 0 9 0 1 1 1";
        assert_eq!(process_ticks(stat), Some(("tokio (rt) x", 320)));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn stretches_are_differences_that_add_up() {
        let at = |busy: u64, pg: u64| Usage {
            busy,
            by_command: HashMap::from([("postgres".to_owned(), pg)]),
        };
        let mut total = at(300, 150).since(&at(100, 50));
        total.add(&at(500, 200).since(&at(400, 190)));
        assert_eq!(
            total.cores(1.5, &[("postgres", "postgres"), ("java", "emulator")]),
            "2.00 in all; postgres 0.73, emulator 0.00"
        );
    }

    #[test]
    fn this_process_uses_cpu_that_is_counted() {
        let before = Usage::now();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let report = Usage::now()
            .since(&before)
            .cores(0.3, &[(own_command().as_str(), "me")]);
        let mine: f64 = report
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        // Shared cores may give the loop less than one, never none and never more than all.
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        assert!(
            mine > 0.05 && mine <= cores + 0.2,
            "a busy loop of 0.3 s counted as {report}"
        );
    }
}
