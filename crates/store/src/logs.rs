//! Function logs: one log group per function, kept as append-only segment files
//! (`logs/<function>/<seq>.log`), each line `<epoch ms>\t<stream>\t<message>`.
//!
//! One writer thread owns every file and writes in batches, so no invoke waits for the disk.
//! Memory and disk are bounded: the channel to the writer is bounded (a flooding function is
//! slowed down, not buffered), a line is at most [`MAX_LINE_BYTES`], and each function keeps at
//! most its byte budget on disk: the oldest segments go first.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Longest single log event (CloudWatch's event limit); longer output is split.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
const WRITER_QUEUE: usize = 4096;
/// How often a busy writer collects lines.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// One line of a function's log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub function: Arc<str>,
    pub stream: Arc<str>,
    pub ts_ms: i64,
    pub message: String,
}

/// One line read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogEvent {
    pub timestamp: i64,
    pub stream: String,
    pub message: String,
}

/// A position in a function's log: segment number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogCursor {
    pub segment: u64,
    pub offset: u64,
}

impl LogCursor {
    pub fn encode(&self) -> String {
        format!("{}-{}", self.segment, self.offset)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('-')?;
        Some(Self { segment: a.parse().ok()?, offset: b.parse().ok()? })
    }
}

/// Limits on what logs may take.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes on disk per function before the oldest segments are removed.
    pub budget_per_function: u64,
    /// Size at which a new segment is started.
    pub segment_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self { budget_per_function: 64 << 20, segment_bytes: 4 << 20 }
    }
}

/// The log store rooted in the data directory.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
    limits: LogLimits,
}

/// Sends lines to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogRecord>,
}

impl LogSink {
    /// Queues a line, waiting if the writer is behind (backpressure on the producer).
    pub async fn write(&self, record: LogRecord) {
        // The writer lives as long as the process; a closed channel means shutdown.
        let _ = self.tx.send(record).await;
    }
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016}.log")
}

fn list_segments(dir: &Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let seq = name.strip_suffix(".log")?.parse().ok()?;
            Some((seq, e.metadata().ok()?.len()))
        })
        .collect();
    out.sort_unstable();
    out
}

impl LogStore {
    pub fn open(root: PathBuf, limits: LogLimits) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(Self { root, limits })
    }

    fn dir(&self, function: &str) -> PathBuf {
        self.root.join(function)
    }

    /// Starts the writer thread and returns the way to reach it.
    pub fn start_writer(&self) -> LogSink {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let store = self.clone();
        std::thread::Builder::new()
            .name("stratus-logs".into())
            .spawn(move || {
                crate::background_thread_started();
                Writer { store, files: HashMap::new() }.run(rx)
            })
            .map(|_| ())
            .unwrap_or_else(
                |e| tracing::error!(error = %e, "cannot start the log writer; function logs will not be stored"),
            );
        LogSink { tx }
    }

    /// Reads up to `max` events of a function's log from `from` (the oldest kept, if `None`).
    pub fn read(&self, function: &str, from: Option<LogCursor>, max: usize) -> io::Result<(Vec<LogEvent>, LogCursor)> {
        let segments = list_segments(&self.dir(function));
        let mut events = Vec::new();
        let mut cursor = from.unwrap_or_default();
        let Some(first) = segments.first() else { return Ok((events, cursor)) };
        if cursor.segment < first.0 {
            cursor = LogCursor { segment: first.0, offset: 0 };
        }
        let from_segment = cursor.segment;
        for &(seq, len) in segments.iter().filter(|(s, _)| *s >= from_segment) {
            let start = if seq == cursor.segment { cursor.offset } else { 0 };
            cursor = LogCursor { segment: seq, offset: start };
            if start >= len {
                continue;
            }
            let mut file = match File::open(self.dir(function).join(segment_name(seq))) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            file.seek(SeekFrom::Start(start))?;
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            loop {
                if events.len() >= max {
                    return Ok((events, cursor));
                }
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break; // end, or a line still being written
                }
                cursor.offset += n as u64;
                let text = String::from_utf8_lossy(&line[..n - 1]);
                let mut parts = text.splitn(3, '\t');
                if let (Some(ts), Some(stream), Some(msg)) = (parts.next(), parts.next(), parts.next()) {
                    events.push(LogEvent {
                        timestamp: ts.parse().unwrap_or(0),
                        stream: stream.to_string(),
                        message: msg.to_string(),
                    });
                }
            }
        }
        Ok((events, cursor))
    }
}

struct OpenSegment {
    seq: u64,
    size: u64,
    /// Bytes of all this function's segments on disk.
    total: u64,
    file: BufWriter<File>,
}

struct Writer {
    store: LogStore,
    files: HashMap<Arc<str>, OpenSegment>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<LogRecord>) {
        while let Some(first) = rx.blocking_recv() {
            self.write(first);
            // While lines keep coming, collect them every few milliseconds instead of being woken
            // for each one: producers then never pay for waking this thread. Back to a blocking
            // wait once a round finds nothing.
            loop {
                let mut n = 0;
                loop {
                    match rx.try_recv() {
                        Ok(rec) => {
                            self.write(rec);
                            n += 1;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            self.flush();
                            return;
                        }
                    }
                }
                self.flush();
                if n == 0 {
                    break;
                }
                std::thread::sleep(BATCH_INTERVAL);
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        for seg in self.files.values_mut() {
            if let Err(e) = seg.file.flush() {
                tracing::warn!(error = %e, "failed to flush a log segment");
            }
        }
    }

    fn write(&mut self, rec: LogRecord) {
        if let Err(e) = self.try_write(&rec) {
            tracing::warn!(function = %rec.function, error = %e, "failed to store a log line");
            self.files.remove(&rec.function);
        }
    }

    fn open(&self, function: &str, seq: u64, total: u64) -> io::Result<OpenSegment> {
        let dir = self.store.dir(function);
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new().create(true).append(true).open(dir.join(segment_name(seq)))?;
        let size = file.metadata()?.len();
        Ok(OpenSegment { seq, size, total, file: BufWriter::with_capacity(64 * 1024, file) })
    }

    fn try_write(&mut self, rec: &LogRecord) -> io::Result<()> {
        if !self.files.contains_key(&rec.function) {
            let segments = list_segments(&self.store.dir(&rec.function));
            let total = segments.iter().map(|s| s.1).sum();
            let seq = segments.last().map(|s| s.0).unwrap_or(1);
            let seg = self.open(&rec.function, seq, total)?;
            self.files.insert(rec.function.clone(), seg);
        }
        let limits = self.store.limits;
        let needs_roll = self.files.get(&rec.function).is_some_and(|s| s.size >= limits.segment_bytes);
        if needs_roll {
            let (seq, total) = {
                let old = self.files.get_mut(&rec.function).ok_or_else(|| io::Error::other("segment vanished"))?;
                old.file.flush()?;
                (old.seq + 1, old.total)
            };
            let seg = self.open(&rec.function, seq, total)?;
            self.files.insert(rec.function.clone(), seg);
            self.enforce_budget(&rec.function)?;
        }
        let seg = self.files.get_mut(&rec.function).ok_or_else(|| io::Error::other("segment vanished"))?;
        let mut msg = rec.message.as_str();
        if msg.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg = &msg[..cut];
        }
        let line = format!("{}\t{}\t{}\n", rec.ts_ms, rec.stream, msg.replace('\n', " "));
        seg.file.write_all(line.as_bytes())?;
        seg.size += line.len() as u64;
        seg.total += line.len() as u64;
        Ok(())
    }

    /// Removes the oldest segments of a function while it is over its budget.
    fn enforce_budget(&mut self, function: &Arc<str>) -> io::Result<()> {
        let budget = self.store.limits.budget_per_function;
        let Some(seg) = self.files.get_mut(function) else { return Ok(()) };
        if seg.total <= budget {
            return Ok(());
        }
        let dir = self.store.dir(function);
        let mut segments = list_segments(&dir);
        let mut total: u64 = segments.iter().map(|s| s.1).sum();
        segments.retain(|s| s.0 != seg.seq);
        for (seq, len) in segments {
            if total <= budget {
                break;
            }
            fs::remove_file(dir.join(segment_name(seq)))?;
            total -= len;
        }
        seg.total = total;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(f: &Arc<str>, s: &Arc<str>, msg: &str) -> LogRecord {
        LogRecord { function: f.clone(), stream: s.clone(), ts_ms: 7, message: msg.into() }
    }

    #[tokio::test]
    async fn writes_reads_and_follows_with_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path().to_path_buf(), LogLimits::default()).unwrap();
        let sink = store.start_writer();
        let (f, s): (Arc<str>, Arc<str>) = ("fn".into(), "2024/01/01/[$LATEST]ab".into());
        sink.write(rec(&f, &s, "one")).await;
        sink.write(rec(&f, &s, "two\twith tab")).await;
        let mut got = Vec::new();
        let mut cursor = None;
        for _ in 0..100 {
            let (ev, c) = store.read("fn", cursor, 10).unwrap();
            got.extend(ev);
            cursor = Some(c);
            if got.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(got[0].message, "one");
        assert_eq!(got[1].message, "two\twith tab");
        assert_eq!(got[1].stream, "2024/01/01/[$LATEST]ab");
        sink.write(rec(&f, &s, "three")).await;
        let mut later = Vec::new();
        for _ in 0..100 {
            let (ev, c) = store.read("fn", cursor, 10).unwrap();
            later.extend(ev);
            cursor = Some(c);
            if !later.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(later.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["three"]);
    }

    #[tokio::test]
    async fn a_flood_stays_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits { budget_per_function: 64 * 1024, segment_bytes: 8 * 1024 };
        let store = LogStore::open(dir.path().to_path_buf(), limits).unwrap();
        let sink = store.start_writer();
        let (f, s): (Arc<str>, Arc<str>) = ("flood".into(), "s".into());
        let line = "x".repeat(1000);
        for _ in 0..2000 {
            sink.write(rec(&f, &s, &line)).await;
        }
        drop(sink);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let total: u64 = list_segments(&dir.path().join("flood")).iter().map(|s| s.1).sum();
        assert!(total <= limits.budget_per_function + limits.segment_bytes + 2048, "{total}");
        // The newest lines are the ones kept.
        let (events, _) = store.read("flood", None, 10_000).unwrap();
        assert!(!events.is_empty() && events.len() < 2000);
    }
}
