//! `GET /api/file`: a committed file's bytes, streamed chunk by chunk from
//! [`crate::storage::Download`], each chunk checked against the file's manifest before it
//! is sent (a browser cannot check it). `ETag` is the file's BLAKE3, so `If-None-Match`
//! and `If-Range` work; one `Range: bytes=…` gives 206 (`curl -C -` resumes). Only images
//! asked for `inline=1` are shown in the page; everything else is an attachment served as
//! `application/octet-stream`, so no stored file is ever rendered as HTML or script.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use xfer_proto::Digest;

use super::files::{busy_transfers, flag, query};
use super::{ApiError, Authed, WebState};
use crate::admission::TransferSlot;
use crate::audit;
use crate::storage::{self, Download, RelPath};

#[derive(Deserialize)]
pub struct GetQuery {
    path: String,
    inline: Option<String>,
}

/// `GET /api/file?path=P[&inline=1]`.
pub async fn get_file(
    State(state): State<WebState>,
    authed: Authed,
    q: Result<Query<GetQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let path = RelPath::parse_entry(&q.path)?;
    let server = &state.server;
    let download = server.storage.open_download(&authed.user, &path).await?;
    let size = download.size();
    let etag = format!("\"{}\"", download.digest());
    let modified = http_date(download.modified_unix());
    let mut h = HeaderMap::new();
    h.insert(ETAG, value(&etag));
    h.insert(LAST_MODIFIED, value(&modified));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if header(&headers, IF_NONE_MATCH.as_str())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let image = if flag(q.inline.as_deref()) {
        image_type(&*download).await
    } else {
        None
    };
    let name = path.file_name().unwrap_or("download");
    let (ty, disposition) = match image {
        Some(ty) => (ty, format!("inline; {}", filename(name))),
        None => (
            "application/octet-stream",
            format!("attachment; {}", filename(name)),
        ),
    };
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ty));
    h.insert(CONTENT_DISPOSITION, value(&disposition));
    // If-Range: the range applies only to the same version (its ETag or date).
    let range_ok = header(&headers, IF_RANGE.as_str()).is_none_or(|v| v == etag || v == modified);
    let range = match header(&headers, RANGE.as_str()).filter(|_| range_ok) {
        None => None,
        Some(r) => match parse_range(r, size) {
            Ok(r) => r,
            Err(()) => {
                h.insert(CONTENT_RANGE, value(&format!("bytes */{size}")));
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response());
            }
        },
    };
    let (status, start, end) = match range {
        Some((a, b)) => {
            h.insert(CONTENT_RANGE, value(&format!("bytes {a}-{b}/{size}")));
            (StatusCode::PARTIAL_CONTENT, a, b + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    h.insert(CONTENT_LENGTH, value(&(end - start).to_string()));
    let limits = server.config().limits.clone();
    let slot = server
        .admission
        .begin_transfer(&authed.user, limits.max_transfers_per_user)
        .ok_or_else(busy_transfers)?;
    let sender = Sender {
        state: state.clone(),
        user: authed.user,
        path,
        download,
        start,
        next: start,
        end,
        resumed: start > 0,
        started: Instant::now(),
        _slot: slot,
    };
    // Recorded with the last piece, not when the stream ends: hyper's HTTP/1.1 writer
    // stops polling a body once it has sent its Content-Length.
    if sender.next >= sender.end {
        sender.finished();
    }
    let stream = futures_util::stream::unfold(sender, |mut s| async move {
        if s.next >= s.end {
            return None;
        }
        let piece = s.piece().await;
        if piece.is_ok() && s.next >= s.end {
            s.finished();
        }
        Some((piece, s))
    });
    Ok((status, h, Body::from_stream(stream)).into_response())
}

/// The state of one streamed download.
struct Sender {
    state: WebState,
    user: String,
    path: RelPath,
    download: Arc<dyn Download>,
    /// The first byte asked for (0, or a range's start).
    start: u64,
    next: u64,
    end: u64,
    resumed: bool,
    started: Instant,
    _slot: TransferSlot,
}

impl Sender {
    /// The next piece: the rest of the chunk holding `next`, up to `end`, verified.
    async fn piece(&mut self) -> Result<Bytes, std::io::Error> {
        let size = self.download.size();
        let index = self.next / storage::CHUNK_SIZE;
        let offset = index * storage::CHUNK_SIZE;
        let (recorded, data) = self
            .download
            .read_chunk(index)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if Digest::of_chunk(&data, offset, size) != Some(recorded) {
            tracing::error!(user = %self.user, path = ?self.path.as_str(), index, "stored chunk does not match its manifest; download stopped");
            return Err(std::io::Error::other("stored data failed verification"));
        }
        let from = (self.next - offset) as usize;
        let to = (self.end.min(offset + data.len() as u64) - offset) as usize;
        if from >= to {
            return Err(std::io::Error::other("file shorter than its manifest"));
        }
        let piece = data.slice(from..to);
        self.next += piece.len() as u64;
        let server = &self.state.server;
        let rate = server.config().limits.user_bytes_per_sec;
        if let Some(until) = server
            .admission
            .charge(&self.user, piece.len() as u64, rate)
        {
            tokio::time::sleep_until(until).await;
        }
        Ok(piece)
    }

    fn finished(&self) {
        // What this request sent: a range from its first byte, not from the file's.
        let sent = self.end - self.start;
        audit::download(&audit::DownloadRecord {
            user: &self.user,
            path: self.path.as_str(),
            size: self.download.size(),
            bytes_sent: sent,
            wire_bytes: sent,
            resumed: self.resumed,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        self.state.server.metrics.download_completed();
    }
}

/// The image type shown inline, from the file's first bytes (not its name).
async fn image_type(download: &dyn Download) -> Option<&'static str> {
    if download.size() == 0 {
        return None;
    }
    let (_, first) = download.read_chunk(0).await.ok()?;
    match infer::get(&first)?.mime_type() {
        "image/png" => Some("image/png"),
        "image/jpeg" => Some("image/jpeg"),
        "image/gif" => Some("image/gif"),
        "image/webp" => Some("image/webp"),
        _ => None,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266).
fn filename(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// One range `bytes=a-b`, `bytes=a-` or `bytes=-n` as inclusive `(first, last)`;
/// `Ok(None)` for forms served whole (several ranges, other units); `Err` when it
/// cannot be satisfied.
pub(super) fn parse_range(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Err(());
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let first: u64 = a.parse().map_err(|_| ())?;
        let last = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        if first >= size || last < first {
            return Err(());
        }
        (first, last)
    };
    Ok(Some(range))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for Unix seconds.
pub(super) fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
