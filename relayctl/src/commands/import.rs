//! `relayctl import --batch FILE [--dry-run]`: validate the whole file locally (row-, name- and
//! field-precise errors, nothing sent), then upsert it by name through the admin API and print a
//! per-row result table and a summary. Exits 1 if the file is invalid or any row failed.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shared::import::parse_import;

use super::Context;
use crate::cli::ImportArgs;
use crate::client::ClientError;

/// From this many rows on, a terminal user gets a spinner while relayd works.
const SPINNER_MIN_ROWS: usize = 20;

/// Validates and imports the file.
pub(super) fn run(ctx: &Context<'_>, args: &ImportArgs) -> anyhow::Result<()> {
    let file = args.batch.display().to_string();
    let bytes =
        std::fs::read(&args.batch).with_context(|| format!("cannot read batch file {file}"))?;
    let rows = match parse_import(&bytes) {
        Ok(rows) => rows,
        Err(errors) => {
            ctx.printer.import_errors(&file, &errors)?;
            bail!(
                "{file}: {} problem(s) found; nothing was sent to relayd",
                errors.len()
            );
        }
    };
    let client = ctx.client()?;
    let spinner = (rows.len() >= SPINNER_MIN_ROWS && std::io::stdout().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner().with_message(format!(
            "importing {} accounts{}",
            rows.len(),
            if args.dry_run { " (dry run)" } else { "" }
        ));
        bar.set_style(ProgressStyle::default_spinner());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let result = client.import(bytes, args.dry_run);
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        // relayd validates too (it may be newer than this relayctl): show its problems the same way.
        Err(ClientError::Api { details, .. }) if !details.is_empty() => {
            ctx.printer.import_errors(&file, &details)?;
            bail!(
                "{file}: relayd rejected {} problem(s); nothing was written",
                details.len()
            );
        }
        Err(e) => return Err(e.into()),
    };
    ctx.printer.import_report(&report)?;
    if report.summary.failed > 0 {
        bail!(
            "{} of {} rows failed",
            report.summary.failed,
            report.rows.len()
        );
    }
    Ok(())
}
