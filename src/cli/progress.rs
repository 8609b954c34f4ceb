//! Step-by-step progress: spinners that end in ✓ or ✗ with the step's duration on a terminal,
//! plain lines in CI logs, nothing with -q.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    quiet: bool,
    tty: bool,
}

pub struct Step {
    bar: Option<ProgressBar>,
    message: String,
    started: Instant,
    quiet: bool,
    finished: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn step(&self, message: impl Into<String>) -> Step {
        let message = message.into();
        let bar = if self.quiet || !self.tty {
            None
        } else {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(" {spinner:.cyan} {msg}") {
                bar.set_style(style);
            }
            bar.set_message(message.clone());
            bar.enable_steady_tick(Duration::from_millis(80));
            Some(bar)
        };
        Step {
            bar,
            message,
            started: Instant::now(),
            quiet: self.quiet,
            finished: false,
        }
    }

    /// Whether only errors and results are wanted (-q).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// A line for the user on stdout (results, the closing how-to).
    pub fn say(&self, text: &str) {
        if !self.quiet {
            println!("{text}");
        }
    }
}

impl Step {
    fn finish(&mut self, mark: &str) {
        self.finished = true;
        let line = format!(
            " {mark} {} ({:.1}s)",
            self.message,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    pub fn done(mut self) {
        self.finish("✓");
    }

    pub fn set_message(&mut self, message: impl Into<String>) {
        self.message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_message(self.message.clone());
        }
    }
}

impl Drop for Step {
    /// A step dropped before `done` failed (an error was returned past it).
    fn drop(&mut self) {
        if !self.finished {
            self.finish("✗");
        }
    }
}
