//! A progress bar for `map`, `imap` and the executor's `map` (the `progress` feature), drawn by
//! `indicatif` on standard error (and not at all when it is not a terminal).
//!
//! ```no_run
//! use multiproc::{process, Pool};
//!
//! #[process]
//! fn square(n: u64) -> u64 {
//!     n * n
//! }
//!
//! # fn main() -> multiproc::Result<()> {
//! let pool = Pool::new(4)?;
//! let squares = pool
//!     .map_async_progress(square, 0..100_000, None, multiproc::progress::bar())
//!     .get()?;
//! let lazily: Vec<u64> = pool
//!     .imap(square, 0..100_000)
//!     .on_progress(multiproc::progress::bar())
//!     .collect::<Result<_, _>>()?;
//! # Ok(())
//! # }
//! ```

use indicatif::{ProgressBar, ProgressStyle};

use crate::pool::Progress;

/// A progress callback that draws a bar: items done of the total (or of the items known so
/// far, for an `imap` whose input is still being read), the rate, and the time left. Pass it to
/// [`Imap::on_progress`](crate::Imap::on_progress) or
/// [`Pool::map_async_progress`](crate::Pool::map_async_progress).
pub fn bar() -> impl FnMut(Progress) + Send + 'static {
    let style =
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} items  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(0).with_style(style);
    move |progress: Progress| {
        bar.set_length(progress.total.unwrap_or(progress.known));
        bar.set_position(progress.done);
        if progress.total == Some(progress.done) {
            bar.finish();
        }
    }
}
