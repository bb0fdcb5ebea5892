//! Captures one environment's output (stdout and stderr share one pipe) into the function's
//! log, framed by the platform's START / END / REPORT lines, and keeps the current
//! invocation's last 4 KB for `X-Amz-Log-Result`.
//!
//! Ordering: END (and any other platform line, except START) is written only after everything
//! already in the pipe has been read, so what a function printed before answering lands
//! between its START and END. START does not drain: the capture task may run late, after
//! the function already printed its first lines for the invocation, and those belong after
//! START. What init printed is drained by [`Capture::sync`] once init is done, before START.
//! Bounds: at most one partial line of [`MAX_LINE_BYTES`] is buffered; lines are sent to the
//! log writer with backpressure, so a flooding function blocks on its own pipe.

use std::collections::VecDeque;
use std::sync::Arc;

use model::invoke::LOG_TAIL_BYTES;
use model::logfmt::now_ms;
use store::logs::MAX_LINE_BYTES;
use store::{LogRecord, LogSink};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

/// Commands from the environment to its capture task.
#[derive(Debug)]
pub enum Command {
    /// Write a platform line (after draining the pipe); starts collecting the tail if
    /// `begins_invocation`.
    Line { text: String, begins_invocation: bool },
    /// Write the closing platform lines of an invocation and return its tail if asked.
    End { lines: Vec<String>, tail: Option<oneshot::Sender<String>> },
    /// Read everything in the pipe now, then answer.
    Sync(oneshot::Sender<()>),
}

/// Handle to a capture task.
#[derive(Debug, Clone)]
pub struct Capture {
    tx: mpsc::Sender<Command>,
}

impl Capture {
    /// Starts capturing `reader` into the log stream `stream` of `function`.
    pub fn start(reader: pipe::Receiver, sink: LogSink, function: Arc<str>, stream: Arc<str>) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let task = Task { sink, function, stream, partial: Vec::new(), tail: None, reader: Some(reader) };
        tokio::spawn(task.run(rx));
        Self { tx }
    }

    pub async fn line(&self, text: String) {
        let _ = self.tx.send(Command::Line { text, begins_invocation: false }).await;
    }

    pub async fn start_invocation(&self, text: String) {
        let _ = self.tx.send(Command::Line { text, begins_invocation: true }).await;
    }

    /// Returns once everything the environment printed so far is in the log (call when init
    /// is done, so that init's output lands before the first START).
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Sync(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Closes an invocation; with `want_tail`, waits for and returns its last 4 KB.
    pub async fn end(&self, lines: Vec<String>, want_tail: bool) -> Option<String> {
        if want_tail {
            let (tx, rx) = oneshot::channel();
            let _ = self.tx.send(Command::End { lines, tail: Some(tx) }).await;
            rx.await.ok()
        } else {
            let _ = self.tx.send(Command::End { lines, tail: None }).await;
            None
        }
    }
}

/// The last lines of the current invocation, bounded to about [`LOG_TAIL_BYTES`].
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let keep =
            if line.len() > LOG_TAIL_BYTES { &line[floor_boundary(line, line.len() - LOG_TAIL_BYTES)..] } else { line };
        self.bytes += keep.len() + 1;
        self.lines.push_back(keep.to_string());
        while self.bytes > LOG_TAIL_BYTES * 2 && self.lines.len() > 1 {
            if let Some(front) = self.lines.pop_front() {
                self.bytes -= front.len() + 1;
            }
        }
    }

    /// The last 4 KB of the lines, each ending in a newline.
    fn render(&self) -> String {
        let mut s = String::with_capacity(self.bytes);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        if s.len() > LOG_TAIL_BYTES {
            let cut = floor_boundary(&s, s.len() - LOG_TAIL_BYTES);
            s.drain(..cut);
        }
        s
    }
}

/// The smallest char boundary at or after `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

struct Task {
    sink: LogSink,
    function: Arc<str>,
    stream: Arc<str>,
    /// Bytes of a line not yet terminated.
    partial: Vec<u8>,
    /// Collecting the current invocation's tail.
    tail: Option<Tail>,
    /// `None` once the pipe reached EOF.
    reader: Option<pipe::Receiver>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                biased;
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if !matches!(cmd, Command::Line { begins_invocation: true, .. }) {
                        self.drain(&mut buf).await;
                    }
                    self.handle(cmd).await;
                }
                n = async { match &self.reader { Some(r) => { r.readable().await.ok(); Some(()) } None => std::future::pending().await } } => {
                    if n.is_some() {
                        self.read_available(&mut buf).await;
                    }
                }
            }
        }
        // The environment is gone: keep whatever it printed last.
        self.drain(&mut buf).await;
        self.flush_partial().await;
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Line { text, begins_invocation } => {
                self.flush_partial().await;
                if begins_invocation {
                    self.tail = Some(Tail::default());
                }
                self.emit(text).await;
            }
            Command::Sync(done) => {
                self.flush_partial().await;
                let _ = done.send(());
            }
            Command::End { lines, tail } => {
                self.flush_partial().await;
                for l in lines {
                    self.emit(l).await;
                }
                let rendered = self.tail.take().map(|t| t.render()).unwrap_or_default();
                if let Some(tx) = tail {
                    let _ = tx.send(rendered);
                }
            }
        }
    }

    /// Reads whatever the pipe holds right now, without waiting. This reads the descriptor
    /// directly: tokio's readiness may not yet know about bytes the function wrote just before
    /// it answered, and those must land before END.
    async fn drain(&mut self, buf: &mut [u8]) {
        loop {
            let Some(reader) = &self.reader else { return };
            match nix::unistd::read(reader, buf) {
                Ok(0) => {
                    self.reader = None;
                    return;
                }
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    self.consume(&data).await;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.reader = None;
                    return;
                }
            }
        }
    }

    /// One read after tokio reported the pipe readable (clears readiness when empty).
    async fn read_available(&mut self, buf: &mut [u8]) {
        let Some(reader) = &self.reader else { return };
        match reader.try_read(buf) {
            Ok(0) => self.reader = None,
            Ok(n) => {
                let data = buf[..n].to_vec();
                self.consume(&data).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.reader = None,
        }
    }

    async fn consume(&mut self, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..pos]);
            data = &data[pos + 1..];
            let line = std::mem::take(&mut self.partial);
            self.emit_bytes(line).await;
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() >= MAX_LINE_BYTES {
            let rest = self.partial.split_off(MAX_LINE_BYTES);
            let line = std::mem::replace(&mut self.partial, rest);
            self.emit_bytes(line).await;
        }
    }

    async fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit_bytes(line).await;
        }
    }

    async fn emit_bytes(&mut self, line: Vec<u8>) {
        let text = match String::from_utf8(line) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.emit(text).await;
    }

    async fn emit(&mut self, message: String) {
        if let Some(tail) = &mut self.tail {
            tail.push(&message);
        }
        self.sink
            .write(LogRecord { function: self.function.clone(), stream: self.stream.clone(), ts_ms: now_ms(), message })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_4kb_on_line_boundaries_where_possible() {
        let mut t = Tail::default();
        for i in 0..1000 {
            t.push(&format!("line {i}"));
        }
        let r = t.render();
        assert!(r.len() <= LOG_TAIL_BYTES);
        assert!(r.ends_with("line 999\n"));
        let mut t = Tail::default();
        t.push(&"é".repeat(5000));
        assert!(t.render().len() <= LOG_TAIL_BYTES);
    }

    #[tokio::test]
    async fn output_printed_before_end_lands_before_end() {
        let dir = tempfile::tempdir().unwrap();
        let logs = store::LogStore::open(dir.path().to_path_buf(), store::LogLimits::default()).unwrap();
        let sink = logs.start_writer();
        let (tx, rx) = pipe::pipe().unwrap();
        let cap = Capture::start(rx, sink, "f".into(), "s".into());
        cap.start_invocation("START".into()).await;
        let mut tx = tx;
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"hello\npartial").await.unwrap();
        let tail = cap.end(vec!["END".into(), "REPORT".into()], true).await.unwrap();
        assert_eq!(tail, "START\nhello\npartial\nEND\nREPORT\n");
    }

    #[tokio::test]
    async fn output_the_capture_task_reads_late_still_lands_after_start() {
        let dir = tempfile::tempdir().unwrap();
        let logs = store::LogStore::open(dir.path().to_path_buf(), store::LogLimits::default()).unwrap();
        let sink = logs.start_writer();
        let (tx, rx) = pipe::pipe().unwrap();
        let writer = tx.into_blocking_fd().unwrap();
        let cap = Capture::start(rx, sink, "f".into(), "s".into());
        nix::unistd::write(&writer, b"init says hi\n").unwrap();
        cap.sync().await;
        // START is queued, and the function prints before the capture task gets to run.
        cap.start_invocation("START".into()).await;
        nix::unistd::write(&writer, b"during\n").unwrap();
        let tail = cap.end(vec!["END".into()], true).await.unwrap();
        assert_eq!(tail, "START\nduring\nEND\n");
    }
}
