//! `--watch`: a live terminal view (ratatui) of listeners, queues, counter rates and
//! findings, refreshed every interval; optionally recording each sample.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use crate::args::DoctorArgs;
use crate::record::Recorder;
use crate::report::{ListenerView, Report, Severity, KEY_COUNTERS};
use crate::sample::Sampler;

/// Samples of ListenOverflows/s kept for the sparkline.
const HISTORY: usize = 120;

/// Everything one frame shows; built by the loop, drawn by [`draw`].
#[derive(Debug, Clone)]
pub struct WatchView {
    /// The latest report, `None` until the first interval has passed.
    pub report: Option<Report>,
    /// Samples taken so far.
    pub samples: u64,
    /// The refresh interval.
    pub interval: Duration,
    /// ListenOverflows per second of recent samples, oldest first.
    pub overflow_history: VecDeque<u64>,
    /// The --record file, if recording.
    pub recording: Option<String>,
}

impl WatchView {
    /// An empty view before the first sample.
    pub fn new(interval: Duration, recording: Option<String>) -> WatchView {
        WatchView {
            report: None,
            samples: 0,
            interval,
            overflow_history: VecDeque::new(),
            recording,
        }
    }

    /// Takes in a new sample.
    pub fn push(&mut self, r: Report) {
        let rate = r.counters.get("ListenOverflows").map_or(0.0, |c| c.per_sec);
        if self.overflow_history.len() == HISTORY {
            self.overflow_history.pop_front();
        }
        self.overflow_history.push_back(rate.round() as u64);
        self.samples += 1;
        self.report = Some(r);
    }
}

/// Runs the live view until q/Esc/Ctrl-C or `--samples`.
pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    let mut recorder = args.record.as_deref().map(Recorder::open).transpose()?;
    let mut sampler = Sampler::start(&args.ports)?.with_metrics(args.metrics.clone());
    let mut view = WatchView::new(
        args.interval,
        args.record.as_ref().map(|p| p.display().to_string()),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!(
            "--watch needs a terminal on stdout; use --record FILE to sample without one"
        );
    }
    // try_init rather than init: a terminal that cannot enter raw mode is an error to
    // report, not a panic.
    let mut terminal = ratatui::try_init().context("setting up the terminal for --watch")?;
    let result = (|| -> anyhow::Result<()> {
        loop {
            terminal.draw(|f| draw(f, &view))?;
            if args.samples.is_some_and(|max| view.samples >= max) {
                return Ok(());
            }
            let deadline = Instant::now() + args.interval;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if event::poll(left)? {
                    if let Event::Key(k) = event::read()? {
                        let ctrl_c = k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL);
                        if k.kind == KeyEventKind::Press
                            && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                        {
                            return Ok(());
                        }
                    }
                }
            }
            let r = sampler.sample()?;
            if let Some(rec) = recorder.as_mut() {
                rec.write(&r)?;
            }
            view.push(r);
        }
    })();
    // Restoring is best effort: the sampling result is the error worth reporting.
    let _ = ratatui::try_restore();
    result
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Warning => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::Cyan),
    }
}

/// Draws one frame of the live view.
pub fn draw(f: &mut Frame, v: &WatchView) {
    let n_listeners = v.report.as_ref().map_or(0, |r| r.listeners.len()) as u16;
    let n_fronts = v.report.as_ref().map_or(0, |r| {
        r.listeners.iter().filter(|l| l.spillway.is_some()).count()
    }) as u16;
    // The Spillway panel only when a front was found, so other screens keep their layout.
    let mut constraints = vec![
        Constraint::Length(1),
        Constraint::Length(n_listeners.clamp(1, 12) + 3),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Min(3),
    ];
    if n_fronts > 0 {
        constraints.insert(2, Constraint::Length(n_fronts.min(6) + 2));
    }
    let areas = Layout::vertical(constraints).split(f.area());
    let (header, table) = (areas[0], areas[1]);
    let (fronts, rest) = if n_fronts > 0 {
        (Some(areas[2]), &areas[3..])
    } else {
        (None, &areas[2..])
    };
    let (counters, spark, findings) = (rest[0], rest[1], rest[2]);
    f.render_widget(header_line(v), header);
    let Some(r) = &v.report else {
        f.render_widget(waiting(v), table);
        return;
    };
    f.render_widget(listeners_table(r), table);
    if let Some(area) = fronts {
        f.render_widget(spillway_panel(r), area);
    }
    f.render_widget(counters_panel(r, counters.width), counters);
    f.render_widget(overflow_sparkline(v), spark);
    f.render_widget(findings_panel(r), findings);
}

/// The user-space layer of each Spillway front: its queue, threads, p99 and 503s.
fn spillway_panel(r: &Report) -> Paragraph<'static> {
    let lines: Vec<Line<'static>> = r
        .listeners
        .iter()
        .filter_map(|l| {
            let v = l.spillway.as_ref()?;
            Some(Line::from(format!(
                "{}  {}",
                l.address,
                crate::text::spillway_line(v)
            )))
        })
        .collect();
    Paragraph::new(lines).wrap(Wrap { trim: true }).block(
        Block::new()
            .borders(Borders::ALL)
            .title("Spillway (user space: its queue and threads)"),
    )
}

fn header_line(v: &WatchView) -> Paragraph<'static> {
    let mut head = format!(
        "spillway doctor --watch · every {:.1} s · sample {}",
        v.interval.as_secs_f64(),
        v.samples
    );
    if let Some(rec) = &v.recording {
        head += &format!(" · recording to {rec}");
    }
    head += " · q quits";
    Paragraph::new(head).style(Style::new().add_modifier(Modifier::BOLD))
}

/// Stands in for the listeners table until the first interval has passed.
fn waiting(v: &WatchView) -> Paragraph<'static> {
    Paragraph::new(format!(
        "sampling… first numbers in {:.1} s",
        v.interval.as_secs_f64()
    ))
    .block(Block::new().borders(Borders::ALL).title("Listeners"))
}

fn listeners_table(r: &Report) -> Table<'static> {
    let widths = [
        Constraint::Min(22),
        Constraint::Min(18),
        Constraint::Length(4),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    let header_row = Row::new([
        "listener", "process", "thr", "accept q", "SYN_RECV", "ESTAB", "CL_WAIT", "T_WAIT",
    ])
    .style(Style::new().add_modifier(Modifier::UNDERLINED));
    let rows: Vec<Row> = r.listeners.iter().map(listener_row).collect();
    Table::new(rows, widths).header(header_row).block(
        Block::new()
            .borders(Borders::ALL)
            .title(format!("Listeners ({})", r.listeners.len())),
    )
}

fn listener_row(l: &ListenerView) -> Row<'static> {
    let (proc_name, threads) = process_columns(l);
    let q = l.accept_queue;
    let q_style = if q.full {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    Row::new(vec![
        Cell::from(l.address.clone()),
        Cell::from(proc_name),
        Cell::from(threads),
        Cell::from(format!(
            "{}/{}{}",
            q.depth,
            q.limit,
            if q.full { " FULL" } else { "" }
        ))
        .style(q_style),
        Cell::from(l.syn_queue.to_string()),
        Cell::from(l.count("ESTABLISHED").to_string()),
        Cell::from(l.count("CLOSE_WAIT").to_string()),
        Cell::from(l.count("TIME_WAIT").to_string()),
    ])
}

/// The process and thread-count columns; a prefork server shows its first process and the
/// threads of all of them.
fn process_columns(l: &ListenerView) -> (String, String) {
    match l.processes.as_slice() {
        [] => (format!("uid {} (hidden)", l.uid), "?".to_string()),
        [p] => (format!("{} {}", p.command, p.pid), p.threads.to_string()),
        [p, rest @ ..] => (
            format!("{} {} +{}", p.command, p.pid, rest.len()),
            l.processes
                .iter()
                .map(|p| p.threads)
                .sum::<u32>()
                .to_string(),
        ),
    }
}

fn counters_panel(r: &Report, width: u16) -> Paragraph<'static> {
    let inner = usize::from(width.saturating_sub(2));
    Paragraph::new(counter_lines(r, inner)).block(Block::new().borders(Borders::ALL).title(
        format!(
            "TcpExt counters, whole namespace, last {:.1} s",
            r.window_secs
        ),
    ))
}

/// Packed by hand, whole items per line, so a counter and its rate never split.
fn counter_lines(r: &Report, inner: usize) -> Vec<Line<'static>> {
    let mut lines: Vec<Line> = Vec::new();
    let mut line: Vec<Span> = Vec::new();
    let mut used = 0;
    for name in KEY_COUNTERS {
        let Some(c) = r.counters.get(*name) else {
            continue;
        };
        let item = format!("{name} +{} ({:.1}/s)", c.delta, c.per_sec);
        let w = item.chars().count() + 3;
        if used + w > inner && !line.is_empty() {
            lines.push(Line::from(std::mem::take(&mut line)));
            used = 0;
        }
        let style = if c.delta > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        line.push(Span::styled(item, style));
        line.push(Span::raw("   "));
        used += w;
    }
    lines.push(Line::from(line));
    lines
}

fn overflow_sparkline(v: &WatchView) -> Sparkline<'static> {
    let hist: Vec<u64> = v.overflow_history.iter().copied().collect();
    let peak = hist.iter().copied().max().unwrap_or(0);
    Sparkline::default()
        .data(&hist)
        .style(Style::new().fg(Color::Red))
        .block(
            Block::new()
                .borders(Borders::ALL)
                .title(format!("ListenOverflows/s (peak {peak})")),
        )
}

fn findings_panel(r: &Report) -> Paragraph<'static> {
    let lines: Vec<Line> = if r.findings.is_empty() {
        vec![Line::from("No findings.")]
    } else {
        r.findings
            .iter()
            .map(|fd| {
                Line::from(vec![
                    Span::styled(
                        format!("{} ", fd.severity.label()),
                        severity_style(fd.severity),
                    ),
                    Span::raw(fd.message.clone()),
                ])
            })
            .collect()
    };
    let mut block = Block::new()
        .borders(Borders::ALL)
        .title(format!("Findings ({})", r.findings.len()));
    if let Some(note) = &r.visibility.note {
        block = block.title_bottom(note.clone());
    }
    Paragraph::new(lines).wrap(Wrap { trim: true }).block(block)
}
