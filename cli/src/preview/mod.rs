//! `xfer pull --preview`: shows each pulled JPEG, PNG, GIF (first frame) or WebP image
//! in the terminal after its file completes, with kitty graphics, iTerm2 inline images
//! or coloured half blocks (see [`terminal`]). Only when stdout is a terminal and the
//! pull is not quiet; otherwise the flag is ignored without a word, like colour in
//! `ls`. `NO_COLOR` does not turn it off: the colours are the picture the user asked
//! to see, not decoration.
//!
//! The file's content came from someone else, so decoding is bounded (see
//! [`decode::MAX_SIDE`], [`decode::MAX_DECODED_BYTES`]) and runs off the async thread.
//! A preview never fails the pull: a damaged or oversized image gives one line on
//! stderr, `preview: NAME: …`, and files that are not images are skipped silently.
//!
//! Built only with the cargo feature `preview` (on by default); without it `--preview`
//! says once that this build has none.

#[cfg(feature = "preview")]
pub mod decode;
#[cfg(feature = "preview")]
pub mod render;
#[cfg(feature = "preview")]
pub mod terminal;

use std::path::Path;

use crate::transfer::progress::Progress;

/// Whether and where the pulled images of one command are shown.
#[derive(Debug)]
pub struct Preview {
    #[cfg(feature = "preview")]
    terminal: Option<terminal::Terminal>,
}

/// The note printed once when `--preview` is asked of a build without the feature.
pub const NOT_BUILT: &str =
    "preview: this build of xfer has no image preview (built without the `preview` feature)";

impl Preview {
    /// Decides once per command: off unless `requested`, stdout is a terminal (not
    /// `TERM=dumb`) and the command is not `quiet`.
    pub fn new(requested: bool, quiet: bool, progress: &Progress) -> Preview {
        #[cfg(feature = "preview")]
        {
            let _ = progress;
            Preview {
                terminal: (requested && !quiet)
                    .then(terminal::Terminal::stdout)
                    .flatten(),
            }
        }
        #[cfg(not(feature = "preview"))]
        {
            let _ = quiet;
            if requested {
                progress.note(NOT_BUILT);
            }
            Preview {}
        }
    }

    /// Shows the image at `path` (a file just pulled) on stdout, between progress-bar
    /// redraws; reports a damaged or oversized image as one note on stderr.
    pub async fn show(&self, path: &Path, progress: &Progress) {
        #[cfg(feature = "preview")]
        if let Some(term) = self.terminal {
            let file = path.to_path_buf();
            let drawn = tokio::task::spawn_blocking(move || draw(&file, &term)).await;
            let name = crate::output::escape_control(&path.display().to_string()).into_owned();
            match drawn {
                Ok(Ok(Some(text))) => progress.result(&text),
                Ok(Ok(None)) => {}
                Ok(Err(why)) => progress.note(&format!(
                    "preview: {name}: {}",
                    crate::output::escape_control(&why)
                )),
                Err(e) => progress.note(&format!("preview: {name}: cannot decode ({e})")),
            }
        }
        #[cfg(not(feature = "preview"))]
        let _ = (path, progress);
    }
}

/// Decodes and renders one file: `Ok(None)` when it is not an image.
#[cfg(feature = "preview")]
fn draw(path: &Path, term: &terminal::Terminal) -> Result<Option<String>, String> {
    let image = match decode::decode(path) {
        Ok(image) => image,
        Err(decode::DecodeError::NotAnImage) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    render::render(&image, term)
        .map(Some)
        .map_err(|e| format!("cannot draw ({e})"))
}

#[cfg(all(test, feature = "preview"))]
mod tests {
    use image::{DynamicImage, Rgba, RgbaImage};
    use tempfile::TempDir;

    use super::terminal::{Palette, Protocol, Terminal};
    use super::*;

    const TERM: Terminal = Terminal {
        protocol: Protocol::Blocks(Palette::TrueColor),
        cols: 80,
        rows: 24,
        cell_px: None,
    };

    #[test]
    fn draw_renders_images_skips_other_files_and_reports_damage() {
        let dir = TempDir::new().unwrap();
        let png = dir.path().join("dot.png");
        DynamicImage::ImageRgba8(RgbaImage::from_pixel(1, 2, Rgba([7, 8, 9, 255])))
            .save(&png)
            .unwrap();
        assert_eq!(
            draw(&png, &TERM).unwrap().as_deref(),
            Some("\x1b[38;2;7;8;9;48;2;7;8;9m▀\x1b[0m")
        );

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello\n").unwrap();
        assert_eq!(draw(&text, &TERM), Ok(None));

        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRgarbage").unwrap();
        let err = draw(&bad, &TERM).unwrap_err();
        assert!(err.starts_with("cannot decode ("), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        let gone = dir.path().join("gone.png");
        let err = draw(&gone, &TERM).unwrap_err();
        assert!(err.starts_with("cannot read ("), "{err}");
    }
}
