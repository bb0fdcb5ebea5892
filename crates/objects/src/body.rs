//! Object bytes in and out: an upload streamed into a staged file (counted, hashed, bounded),
//! and a stored file streamed back with its exact length.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::Digest;
use s3s::dto::StreamingBlob;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3Error, S3ErrorCode, StdError, s3_error};
use store::objects::{ObjectStore, Staged};

/// Bytes buffered before a write to disk (off the async threads).
const WRITE_BATCH: usize = 1 << 20;

/// Where an upload's bytes are.
pub enum Received {
    /// Small enough to keep in the object's row (never written to a file).
    Inline(Vec<u8>),
    Staged(Staged),
}

/// What an upload wrote.
pub struct Written {
    pub body: Received,
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: s3s::dto::Checksum,
}

/// An I/O error as S3 reports it: a full disk is `InsufficientStorage` (507), as S3-compatible
/// servers report it, anything else `InternalError`.
pub fn io_error(e: std::io::Error) -> S3Error {
    // ENOSPC, EDQUOT
    if matches!(e.raw_os_error(), Some(28 | 122)) {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("InsufficientStorage".into()),
            "The server has no space left to store this object; nothing was stored.",
        );
        err.set_status_code(hyper::StatusCode::INSUFFICIENT_STORAGE);
        return err;
    }
    tracing::error!(error = %e, "object storage i/o failed");
    s3_error!(InternalError, "We encountered an internal error. Please try again.")
}

pub fn too_large(max: u64) -> S3Error {
    s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed object size ({max} bytes).")
}

fn write_batch(file: &mut std::fs::File, batch: &[Bytes]) -> std::io::Result<()> {
    for b in batch {
        file.write_all(b)?;
    }
    Ok(())
}

fn stage(store: &ObjectStore) -> Result<(Staged, std::fs::File), S3Error> {
    store.stage().map_err(|e| match e {
        store::StoreError::Io(e) => io_error(e),
        other => s3_error!(InternalError, "{other}"),
    })
}

/// Streams `body` into a new staged file (or, when `inline` and it is at most
/// `store::objects::INLINE_MAX` bytes, into memory), failing with `EntityTooLarge` past `max`
/// bytes (the staged file is then removed).
pub async fn receive(
    store: &ObjectStore,
    body: StreamingBlob,
    max: u64,
    mut checksums: s3s::checksum::ChecksumHasher,
    inline: bool,
) -> Result<Written, S3Error> {
    let mut staged: Option<Staged> = None;
    let mut file: Option<std::fs::File> = None;
    let mut md5 = md5::Md5::new();
    let mut size: u64 = 0;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut body = body;
    loop {
        let next = body.next().await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "The request body was cut short: {e}"))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large(max));
            }
            md5.update(&chunk);
            checksums.update(&chunk);
            batched += chunk.len();
            batch.push(chunk);
        }
        if done && staged.is_none() && inline && size <= store::objects::INLINE_MAX {
            let mut data = Vec::with_capacity(size as usize);
            for b in &batch {
                data.extend_from_slice(b);
            }
            let mut out = [0u8; 16];
            out.copy_from_slice(&md5.finalize());
            return Ok(Written { body: Received::Inline(data), size, md5: out, checksums: checksums.finalize() });
        }
        if (done && (!batch.is_empty() || staged.is_none())) || batched >= WRITE_BATCH {
            if staged.is_none() {
                let (st, f) = stage(store)?;
                staged = Some(st);
                file = Some(f);
            }
            let mut f = file.take().ok_or_else(|| s3_error!(InternalError))?;
            let pending = std::mem::take(&mut batch);
            let (f, result) = tokio::task::spawn_blocking(move || {
                let r = write_batch(&mut f, &pending);
                (f, r)
            })
            .await
            .map_err(|_| s3_error!(InternalError))?;
            result.map_err(io_error)?;
            file = Some(f);
            batched = 0;
        }
        if done {
            break;
        }
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&md5.finalize());
    let staged = staged.ok_or_else(|| s3_error!(InternalError))?;
    Ok(Written { body: Received::Staged(staged), size, md5: out, checksums: checksums.finalize() })
}

/// A file's bytes `[start, start + len)` as a response body of known length.
pub struct FileBody {
    inner: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + Sync>>,
    remaining: usize,
}

impl FileBody {
    pub async fn open(file: std::fs::File, start: u64, len: u64) -> std::io::Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::from_std(file);
        if start > 0 {
            f.seek(std::io::SeekFrom::Start(start)).await?;
        }
        let reader = tokio_util::io::ReaderStream::with_capacity(f.take(len), 1 << 20);
        Ok(Self { inner: Box::pin(reader), remaining: len as usize })
    }
}

impl Stream for FileBody {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len());
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ByteStream for FileBody {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.remaining)
    }
}
