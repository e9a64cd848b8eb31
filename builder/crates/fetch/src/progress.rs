//! How downloads report progress: `indicatif` bars on a terminal, plain lines otherwise, or
//! nothing but log records.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where download progress goes: bars, plain lines on stderr, or only `log` records.
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    /// Only `log::info!` records (`--quiet`).
    Hidden,
    /// One line on stderr per finished download (stderr is not a terminal).
    Lines,
    /// One overall bar plus a line per active download.
    Bars(MultiProgress),
}

impl Progress {
    /// No output beyond `log` records (for `--quiet`).
    pub fn hidden() -> Self {
        Progress { mode: Mode::Hidden }
    }

    /// A plain line on stderr per finished download (logs, CI).
    pub fn lines() -> Self {
        Progress { mode: Mode::Lines }
    }

    /// Progress bars on stderr when it is a terminal, else [`Progress::lines`].
    pub fn bars() -> Self {
        if std::io::stderr().is_terminal() {
            Progress {
                mode: Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            }
        } else {
            Progress::lines()
        }
    }

    /// Whether nothing is shown but log records.
    pub fn is_hidden(&self) -> bool {
        matches!(self.mode, Mode::Hidden)
    }

    /// The overall bar of a batch of `count` downloads totalling `total` bytes (hidden
    /// unless bars are shown).
    pub(crate) fn batch(&self, count: usize, total: u64) -> ProgressBar {
        match &self.mode {
            // Nothing to download (only cached files to verify): no bar to flash up.
            Mode::Bars(_) if count == 0 => ProgressBar::hidden(),
            Mode::Bars(multi) => {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("fetching {count} file{}", if count == 1 { "" } else { "s" }));
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
            Mode::Hidden | Mode::Lines => ProgressBar::hidden(),
        }
    }

    /// A line for one download of `label`, `size` bytes if known, counted into `overall`.
    pub(crate) fn download<'a>(
        &'a self,
        label: &str,
        size: Option<u64>,
        overall: Option<&'a ProgressBar>,
    ) -> DownloadLine<'a> {
        let bar = match &self.mode {
            Mode::Bars(multi) => {
                let bar = multi.add(ProgressBar::new(size.unwrap_or(0)));
                let template = if size.is_some() {
                    "  {msg:40!} {binary_bytes:>11}/{binary_total_bytes:<11}"
                } else {
                    "  {msg:40!} {binary_bytes:>11} {spinner}"
                };
                bar.set_style(ProgressStyle::with_template(template).expect("static template"));
                bar.set_message(label.to_string());
                bar
            }
            Mode::Hidden | Mode::Lines => ProgressBar::hidden(),
        };
        log::info!("downloading {label}");
        DownloadLine {
            progress: self,
            bar,
            overall,
            label: label.to_string(),
            counted: 0,
        }
    }

    /// Reports that a batch ended: `downloaded` of `count` files, `bytes` in all.
    pub(crate) fn batch_done(overall: &ProgressBar, downloaded: usize, count: usize, bytes: u64) {
        let plural = if downloaded == 1 { "" } else { "s" };
        let mut summary = format!("fetched {downloaded} file{plural} ({})", indicatif::BinaryBytes(bytes));
        if count > downloaded {
            summary.push_str(&format!(", {} already cached", count - downloaded));
        }
        // The caller prints its own summary; the bar only goes away.
        overall.finish_and_clear();
        log::info!("{summary}");
    }
}

/// The progress of one download.
pub(crate) struct DownloadLine<'a> {
    progress: &'a Progress,
    bar: ProgressBar,
    overall: Option<&'a ProgressBar>,
    label: String,
    counted: u64,
}

impl DownloadLine<'_> {
    /// `n` more bytes arrived.
    pub(crate) fn inc(&mut self, n: u64) {
        self.counted += n;
        self.bar.inc(n);
        if let Some(o) = self.overall {
            o.inc(n);
        }
    }

    /// The download starts over (a retry): what it counted so far is taken back.
    pub(crate) fn restart(&mut self) {
        if let Some(o) = self.overall {
            o.set_position(o.position().saturating_sub(self.counted));
        }
        self.bar.set_position(0);
        self.counted = 0;
    }

    /// The total size became known (from `Content-Length`).
    pub(crate) fn set_size(&mut self, size: u64) {
        if self.bar.length() == Some(0) {
            self.bar.set_length(size);
            self.bar.set_style(
                ProgressStyle::with_template("  {msg:40!} {binary_bytes:>11}/{binary_total_bytes:<11}")
                    .expect("static template"),
            );
        }
    }

    /// The download finished with `bytes` bytes.
    pub(crate) fn finish(self, bytes: u64) {
        self.bar.finish_and_clear();
        if matches!(self.progress.mode, Mode::Lines) {
            eprintln!("fetched {} ({})", self.label, indicatif::BinaryBytes(bytes));
        }
        log::info!("fetched {} ({bytes} bytes)", self.label);
    }

    /// The download failed.
    pub(crate) fn abandon(self) {
        self.bar.finish_and_clear();
        if let Some(o) = self.overall {
            o.set_position(o.position().saturating_sub(self.counted));
        }
    }
}

/// A reader that reports the bytes it yields to a [`DownloadLine`].
pub(crate) struct CountingReader<'l, 'p, R> {
    pub(crate) inner: R,
    pub(crate) line: &'l mut DownloadLine<'p>,
}

impl<R: Read> Read for CountingReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.line.inc(n as u64);
        Ok(n)
    }
}
