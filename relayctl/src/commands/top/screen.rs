//! One frame of `top`: a header line about the server, a banner while the connection is lost,
//! the accounts table, the keys table and a footer with the keys to press.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

use super::model::{AccountRow, KeyRow, Top, sort_name};
use crate::output::snapshot::{StateKind, rate_text, seconds_text, tokens_today_text};

/// Draws `top` as of `now`. Takes `top` mutably to clamp its scroll to what fits.
pub(super) fn draw(frame: &mut Frame<'_>, top: &mut Top, now: Instant) {
    let accounts = top.accounts(now);
    let keys = top.keys();
    let area = frame.area();
    // The keys get what they need, up to a third of the screen; the accounts the rest.
    let keys_height = u16::try_from(keys.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height / 3)
        .max(3);
    let banner_height = u16::from(top.lost.is_some());
    let [header, banner, accounts_area, keys_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner_height),
        Constraint::Min(3),
        Constraint::Length(keys_height),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(top, now)), header);
    if let Some(why) = &top.lost {
        // The retry first: a long reason is cut at the screen's edge.
        let text = format!(
            " connection lost, retrying every {}: {why}",
            interval_text(top)
        );
        let style = Style::new()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD);
        frame.render_widget(Paragraph::new(text).style(style), banner);
    }
    draw_accounts(frame, top, &accounts, accounts_area);
    draw_keys(frame, &keys, keys_area);
    frame.render_widget(Paragraph::new(footer_line(top)), footer);
}

fn header_line(top: &Top, now: Instant) -> Line<'static> {
    let Some(snapshot) = top.latest() else {
        return Line::from(format!(
            " relayd at {}: waiting for the first snapshot…",
            top.server
        ));
    };
    let s = &snapshot.server;
    let age = top.age(now).map_or(0.0, |a| a.as_secs_f64());
    Line::from(vec![
        Span::styled(
            format!(" relayd {} ", s.version),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "{}  {} store  up {}  in flight {}  queued {}  updated {age:.1}s ago",
            top.server,
            s.store,
            crate::output::format_duration(s.uptime_seconds),
            s.in_flight,
            s.queue_depth,
        )),
    ])
}

/// Screens at least this wide show the accounts' server family and context window.
const WIDE_COLUMNS: u16 = 120;

fn draw_accounts(frame: &mut Frame<'_>, top: &mut Top, rows: &[AccountRow], area: Rect) {
    // Title and header take two lines; the rest shows rows from `scroll` on.
    let visible = usize::from(area.height.saturating_sub(2));
    top.scroll = top.scroll.min(rows.len().saturating_sub(visible));
    // The server column only where the state column keeps room for a cooldown's reason.
    let wide = area.width >= WIDE_COLUMNS;
    let mut titles = vec![
        "ACCOUNT",
        "STATE",
        "IN FLIGHT",
        "REQ/S",
        "ERR/S",
        "P50 TTFB",
        "OUT TOK/S",
        "PRIO",
    ];
    let mut widths = vec![
        Constraint::Fill(2),
        Constraint::Fill(3),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(4),
    ];
    if wide {
        titles.push("SERVER / WINDOW");
        widths.push(Constraint::Fill(2));
    }
    let header =
        Row::new(titles).style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    let lines = rows.iter().skip(top.scroll).take(visible).map(|r| {
        let mut cells = vec![
            r.name.clone(),
            r.state.clone(),
            format!("{}/{}", r.in_flight, r.concurrency),
            rate_text(r.requests),
            rate_text(r.errors),
            seconds_text(r.ttfb_p50),
            rate_text(r.tokens),
            r.priority.to_string(),
        ];
        if wide {
            cells.push(r.server.clone());
        }
        Row::new(cells).style(state_style(r.kind))
    });
    let shown = if rows.len() > visible {
        format!(
            " accounts {}–{} of {} ",
            top.scroll + 1,
            (top.scroll + visible).min(rows.len()),
            rows.len()
        )
    } else {
        format!(" accounts ({}) ", rows.len())
    };
    let table = Table::new(lines, widths)
        .header(header)
        .block(Block::new().borders(Borders::TOP).title(shown));
    frame.render_widget(table, area);
}

fn draw_keys(frame: &mut Frame<'_>, rows: &[KeyRow], area: Rect) {
    let header = Row::new(["KEY", "STATE", "REQ/S", "TOKENS TODAY / LIMIT"])
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    let lines = rows.iter().map(|k| {
        Row::new([
            k.name.clone(),
            k.state.clone(),
            rate_text(k.requests),
            tokens_today_text(k.tokens_today, k.tokens_per_day),
        ])
    });
    let table = Table::new(
        lines,
        [
            Constraint::Fill(2),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Fill(3),
        ],
    )
    .header(header)
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(format!(" keys ({}) ", rows.len())),
    );
    frame.render_widget(table, area);
}

fn footer_line(top: &Top) -> Line<'static> {
    let key = Style::new().add_modifier(Modifier::REVERSED);
    let filter = if top.editing_filter {
        format!(" filter: {}▏ (Enter keeps, Esc clears)", top.filter)
    } else if top.filter.is_empty() {
        " filter".to_owned()
    } else {
        format!(" filter: {}", top.filter)
    };
    Line::from(vec![
        Span::styled(" q ", key),
        Span::raw(" quit  "),
        Span::styled(" s ", key),
        Span::raw(format!(" sort: {}  ", sort_name(top.sort))),
        Span::styled(" / ", key),
        Span::raw(format!("{filter}  ")),
        Span::styled(" ↑↓ ", key),
        Span::raw(format!(" scroll   every {}", interval_text(top))),
    ])
}

fn interval_text(top: &Top) -> String {
    let secs = top.interval.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs:.1}s")
    }
}

fn state_style(kind: StateKind) -> Style {
    match kind {
        StateKind::Cooling => Style::new().fg(Color::Red),
        StateKind::Full => Style::new().fg(Color::Yellow),
        StateKind::Disabled => Style::new().fg(Color::DarkGray),
        StateKind::Ok => Style::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use shared::account::AccountId;
    use shared::admin::{LatencyHistogram, LiveState, Snapshot, SnapshotAccount, SnapshotServer};

    use super::*;
    use crate::cli::{TopArgs, TopSort};

    fn screen_text(top: &mut Top, now: Instant) -> String {
        screen_text_at(top, now, 100)
    }

    fn screen_text_at(top: &mut Top, now: Instant, width: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, 12)).unwrap();
        terminal.draw(|frame| draw(frame, top, now)).unwrap();
        let buffer = terminal.backend().buffer();
        let width = usize::from(buffer.area.width);
        buffer
            .content()
            .chunks(width)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_frame_shows_the_accounts_and_a_banner_when_the_connection_is_lost() {
        let args = TopArgs {
            interval: Duration::from_secs(1),
            once: false,
            sort: TopSort::Name,
            filter: None,
        };
        let mut top = Top::new(&args, "http://relayd".into());
        let now = Instant::now();
        assert!(screen_text(&mut top, now).contains("waiting for the first snapshot"));
        let accounts = (0..20)
            .map(|i| SnapshotAccount {
                id: AccountId(format!("acc_{i}")),
                name: format!("box{i:02}"),
                enabled: true,
                state: LiveState::CoolingDown {
                    until: 61_000,
                    reason: "HTTP 500".into(),
                },
                in_flight: 1,
                concurrency: 4,
                priority: 50,
                family: Some(shared::profile::ServerFamily::Vllm),
                context_window: Some(32768),
                requests: 0,
                errors: 0,
                failed_attempts: 0,
                tokens: Default::default(),
                ttfb: LatencyHistogram::default(),
                latency_seconds_total: 0.0,
            })
            .collect();
        let snapshot = Snapshot {
            at: 1_000,
            server: SnapshotServer {
                version: "9.9.9".into(),
                uptime_seconds: 3,
                store: "embedded".into(),
                in_flight: 1,
                queue_depth: 2,
            },
            ttfb_bounds: vec![0.1],
            accounts,
            keys: Vec::new(),
        };
        top.update(Ok(snapshot), now);
        let text = screen_text(&mut top, now);
        assert!(text.contains("relayd 9.9.9"), "{text}");
        assert!(text.contains("queued 2"), "{text}");
        let row = text.lines().find(|l| l.starts_with("box00")).expect(&text);
        assert!(row.contains("cooling 1m00s (HTTP 500)"), "{row}");
        assert!(row.contains("1/4"), "{row}");
        assert!(!text.contains("SERVER"), "no room at 100 columns: {text}");
        let wide = screen_text_at(&mut top, now, 140);
        let row = wide.lines().find(|l| l.starts_with("box00")).expect(&wide);
        assert!(row.contains("cooling 1m00s (HTTP 500)"), "{row}");
        assert!(row.contains("vllm 32768"), "{row}");
        assert!(text.contains("accounts 1–"), "20 rows do not fit: {text}");
        top.scroll = usize::MAX;
        let text = screen_text(&mut top, now);
        assert!(text.contains("box19"), "scrolled to the end: {text}");
        assert!(top.scroll < 20, "the scroll is clamped to what fits");
        top.update(Err("cannot reach relayd".into()), now);
        let text = screen_text(&mut top, now);
        assert!(
            text.contains("connection lost, retrying every 1s: cannot reach relayd"),
            "{text}"
        );
    }
}
