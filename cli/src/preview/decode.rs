//! Bounded decoding of a pulled file for `--preview`: which files count as images, and
//! limits on what a hostile file can make the decoder allocate. Rendering is elsewhere.

use std::fmt;
use std::path::Path;

use image::{DynamicImage, ImageDecoder as _, ImageFormat, ImageReader, Limits};

/// Largest width or height (in pixels) that is decoded for a preview.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decoded image (bytes, as the decoder stores it) that is decoded for a preview.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Why a file was not decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// Not JPEG, PNG, GIF or WebP, neither by content nor (for unrecognised content) by
    /// name: not something to preview, and not worth a word.
    NotAnImage,
    /// The header announces an image beyond [`MAX_SIDE`] or [`MAX_DECODED_BYTES`].
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },
    /// Decoding would need more memory than the limits allow (found by the decoder).
    OverLimit(image::ImageError),
    /// The file could not be opened or read.
    Read(std::io::Error),
    /// The content is not a valid image of its format (truncated files included).
    Corrupt(image::ImageError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotAnImage => f.write_str("not an image"),
            DecodeError::TooLarge { width, height } => write!(
                f,
                "too large to preview ({width}×{height} pixels; the limit is {MAX_SIDE} \
                 pixels a side and {} MiB decoded)",
                MAX_DECODED_BYTES >> 20
            ),
            DecodeError::OverLimit(e) => write!(f, "too large to preview ({e})"),
            DecodeError::Read(e) => write!(f, "cannot read ({e})"),
            DecodeError::Corrupt(e) => write!(f, "cannot decode ({e})"),
        }
    }
}

/// Decodes the image at `path` (the first frame of an animation), upright according to
/// its EXIF orientation.
///
/// The format comes from the content; a name like `x.png` only counts when the content
/// is not recognised, so a damaged `x.png` is reported rather than ignored. Dimensions
/// and the decoded size are checked from the header before any pixel buffer exists,
/// and the decoder itself runs under the same limits.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode(path: &Path) -> Result<DynamicImage, DecodeError> {
    let reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(DecodeError::Read)?;
    if !matches!(
        reader.format(),
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP)
    ) {
        return Err(DecodeError::NotAnImage);
    }
    // Only the memory bound while the header is read (the PNG decoder checks its limits
    // that early), so that an oversized image is reported with its dimensions.
    let mut reader = reader;
    reader.limits(limits(None));
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if !within_limits(width, height, decoder.total_bytes()) {
        return Err(DecodeError::TooLarge { width, height });
    }
    decoder
        .set_limits(limits(Some(MAX_SIDE)))
        .map_err(decode_error)?;
    // A bad orientation tag is not worth losing the picture over.
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(image)
}

fn limits(max_side: Option<u32>) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = max_side;
    limits.max_image_height = max_side;
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}

/// The file was opened and recognised, so a decoder's I/O error is a truncated file.
fn decode_error(e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Limits(_) => DecodeError::OverLimit(e),
        e => DecodeError::Corrupt(e),
    }
}

/// Whether an image of this header is small enough to decode.
fn within_limits(width: u32, height: u32, decoded_bytes: u64) -> bool {
    width <= MAX_SIDE && height <= MAX_SIDE && decoded_bytes <= MAX_DECODED_BYTES
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{Rgba, RgbaImage};
    use tempfile::TempDir;

    use super::*;

    fn sample() -> RgbaImage {
        RgbaImage::from_fn(6, 4, |x, y| {
            Rgba([(x * 40) as u8, (y * 60) as u8, 200, 255])
        })
    }

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let img = DynamicImage::ImageRgba8(sample());
        // JPEG has no alpha channel.
        let img = if format == ImageFormat::Jpeg {
            DynamicImage::ImageRgb8(img.to_rgb8())
        } else {
            img
        };
        img.write_to(&mut out, format)
            .expect("encoding a test image");
        out.into_inner()
    }

    fn file(dir: &TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn decodes_the_four_formats_by_content_whatever_the_name() {
        let dir = TempDir::new().unwrap();
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Gif,
            ImageFormat::WebP,
        ] {
            let p = file(&dir, "no-extension", &encoded(format));
            let img = decode(&p).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!((img.width(), img.height()), (6, 4), "{format:?}");
        }
        // Lossless formats keep the pixels exactly.
        let p = file(&dir, "a.webp", &encoded(ImageFormat::Png));
        assert_eq!(decode(&p).unwrap().to_rgba8(), sample());
    }

    #[test]
    fn other_files_are_not_images_unless_named_like_one() {
        let dir = TempDir::new().unwrap();
        let p = file(&dir, "notes.txt", b"just some text\n");
        assert!(matches!(decode(&p), Err(DecodeError::NotAnImage)));
        // A recognised but unsupported format (BMP) is not previewed either.
        let p = file(&dir, "pic.png", b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0");
        assert!(matches!(decode(&p), Err(DecodeError::NotAnImage)));
        // Unrecognised content named like an image is a damaged image.
        let p = file(&dir, "photo.JPG", b"just some text\n");
        assert!(matches!(decode(&p), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn truncated_and_garbled_images_are_errors_not_panics() {
        let dir = TempDir::new().unwrap();
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Gif,
            ImageFormat::WebP,
        ] {
            let good = encoded(format);
            for cut in [0, 8, good.len() / 2] {
                let p = file(&dir, "cut", &good[..cut]);
                let err = decode(&p).expect_err(&format!("{format:?} cut at {cut}"));
                // The name is only a hint: empty content and truncated headers are
                // not recognised, and a file called `cut` is then not an image.
                assert!(
                    matches!(err, DecodeError::Corrupt(_) | DecodeError::NotAnImage),
                    "{format:?} cut at {cut}: {err}"
                );
            }
            let p = file(&dir, "cut.png", &good[..good.len() / 2]);
            if format == ImageFormat::Png {
                let err = decode(&p).unwrap_err();
                assert!(err.to_string().starts_with("cannot decode ("), "{err}");
            }
            let mut garbled = good.clone();
            for b in garbled.iter_mut().skip(16) {
                *b ^= 0x5a;
            }
            let p = file(&dir, "garbled", &garbled);
            let _ = decode(&p); // may or may not decode; must not panic
        }
    }

    /// A PNG header for `width`×`height` RGBA pixels and the start of its data: enough
    /// for a decoder to report the dimensions, nothing more.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        for chunk in [ihdr, b"IDAT\x78\x01".to_vec()] {
            png.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        png
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        let dir = TempDir::new().unwrap();
        // Too wide.
        let p = file(&dir, "wide.png", &png_header(20_000, 10));
        let err = decode(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    width: 20_000,
                    height: 10
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("too large to preview (20000×10 pixels"),
            "{err}"
        );
        // Sides within the limit, but 1 GiB decoded.
        let p = file(&dir, "big.png", &png_header(MAX_SIDE, MAX_SIDE));
        let err = decode(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    width: MAX_SIDE,
                    height: MAX_SIDE
                }
            ),
            "{err}"
        );
        // Within both: refused only for its missing data.
        let p = file(&dir, "fine.png", &png_header(4000, 3000));
        assert!(matches!(decode(&p), Err(DecodeError::Corrupt(_))));

        assert!(within_limits(MAX_SIDE, MAX_SIDE / 4, MAX_DECODED_BYTES));
        assert!(!within_limits(MAX_SIDE + 1, 1, 4));
        assert!(!within_limits(8192, 8193, 8192 * 8193 * 4));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
