//! Printing helpers: warnings, progress bars, human-readable sizes and times.

use std::cell::Cell;
use std::io::{self, Write};

use corpora::Problem;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the command prints its side remarks, and what it has seen go wrong.
pub struct Ui {
    quiet: bool,
    damage: Cell<u64>,
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        Ui { quiet, damage: Cell::new(0) }
    }

    /// Prints a problem as a warning; damage makes the command end with the input-error code.
    pub fn problem(&self, p: &Problem) {
        if p.is_damage() {
            self.damage.set(self.damage.get() + 1);
        }
        let _ = writeln!(io::stderr().lock(), "warning: {p}");
    }

    /// Prints a problem as a warning without counting it (damage that was repaired).
    pub fn repaired(&self, p: &Problem) {
        let _ = writeln!(io::stderr().lock(), "warning: {p}");
    }

    /// Whether `--quiet` was given.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// How many damage problems were reported.
    pub fn damage(&self) -> u64 {
        self.damage.get()
    }

    /// A summary line on stderr (not with `--quiet`).
    pub fn note(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            let _ = writeln!(io::stderr().lock(), "{msg}");
        }
    }

    /// A byte-counting progress bar, drawn only when stdout and stderr are terminals.
    pub fn bytes_bar(&self, total: u64, what: &str) -> ProgressBar {
        if !crate::progress_allowed(self.quiet) {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar
    }

    /// The exit code for a command that otherwise succeeded.
    pub fn exit_code(&self) -> i32 {
        if self.damage() > 0 { crate::exit_codes::INPUT_ERROR } else { crate::exit_codes::OK }
    }
}

/// `1.5 KiB`, `64 B`, `2.0 GiB`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// RFC 3339 UTC with milliseconds, from nanoseconds since the Unix epoch.
pub fn time(ns: i64) -> String {
    corpora::rfc3339(ns)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(12), "12 B");
        assert_eq!(super::time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::time(1_795_000_000_123_000_000), "2026-11-18T11:06:40.123Z");
        assert_eq!(super::time(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }
}
