//! `GET /api/thumb?path=P`: a PNG preview of at most [`THUMB_SIDE`] pixels a side of a
//! PNG, JPEG, GIF or WebP file. Decoding is bounded: files over [`MAX_THUMB_INPUT`]
//! bytes are refused, the decoder is limited in dimensions and allocation (a small file
//! claiming a huge image cannot take the daemon's memory), and it runs on the blocking
//! pool. Anything else is 415 `type_rejected`.

use std::io::Cursor;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use image::{ImageFormat, ImageReader, Limits};
use serde::Deserialize;
use xfer_proto::ErrorCode;

use super::files::query;
use super::{ApiError, Authed, WebState};
use crate::storage::{self, RelPath};

/// Largest file a thumbnail is made of.
pub const MAX_THUMB_INPUT: u64 = 32 * 1024 * 1024;
/// Largest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 256;
/// Largest image side the decoder accepts.
const MAX_SIDE: u32 = 12_000;
/// Most memory one decode may allocate (an RGBA image of 24 megapixels).
const MAX_ALLOC: u64 = 96 * 1024 * 1024;
/// Thumbnails made at once, across all users: each may hold its file and a decoded
/// image ([`MAX_ALLOC`]), so a burst of requests waits here instead of taking memory
/// and the blocking threads every storage call needs.
static DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

#[derive(Deserialize)]
pub struct ThumbQuery {
    path: String,
}

/// `GET /api/thumb?path=P`.
pub async fn thumb(
    State(state): State<WebState>,
    authed: Authed,
    q: Result<Query<ThumbQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let path = RelPath::parse_entry(&q.path)?;
    let download = state
        .server
        .storage
        .open_download(&authed.user, &path)
        .await?;
    let size = download.size();
    if size > MAX_THUMB_INPUT {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("no thumbnail for files over {MAX_THUMB_INPUT} bytes"),
        ));
    }
    let _decode = DECODES
        .acquire()
        .await
        .map_err(|e| ApiError::internal("waiting for a thumbnail", &e))?;
    let mut data = BytesMut::with_capacity(size as usize);
    for index in 0..storage::chunk_count(size) {
        let (_, chunk) = download.read_chunk(index).await?;
        data.extend_from_slice(&chunk);
    }
    let png = tokio::task::spawn_blocking(move || render(&data))
        .await
        .map_err(|e| ApiError::internal("making a thumbnail", &e))??;
    Ok(([(CONTENT_TYPE, HeaderValue::from_static("image/png"))], png).into_response())
}

fn render(data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let not_image = || {
        ApiError::new(
            ErrorCode::TypeRejected,
            "not a PNG, JPEG, GIF or WebP image",
        )
    };
    let mut reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|_| not_image())?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => {}
        _ => return Err(not_image()),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| {
        ApiError::new(
            ErrorCode::TypeRejected,
            format!("image cannot be decoded: {e}"),
        )
    })?;
    let small = image.thumbnail(THUMB_SIDE, THUMB_SIDE);
    let mut out = Vec::new();
    small
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| ApiError::internal("encoding a thumbnail", &e))?;
    Ok(out)
}
