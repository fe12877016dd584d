//! Turns a decoded image into the text that draws it on a [`Terminal`]: the size in
//! cells (fit to the window's width and half its height, aspect ratio kept), then
//! kitty graphics, iTerm2 inline images or half blocks. Pure: returns a string and
//! writes nothing, so the caller can print it between progress-bar redraws.

use std::fmt::Write as _;
use std::io::Cursor;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use image::{DynamicImage, ImageFormat, RgbaImage};

use super::terminal::{Palette, Protocol, Terminal};

/// Widest preview, in cells, however wide the window (bounds the output's size).
const MAX_COLS: u32 = 400;
/// Tallest preview, in cells, however tall the window.
const MAX_ROWS: u32 = 200;
/// Cell size in pixels assumed for the graphics protocols when the terminal does not
/// report it; only sets how many pixels are sent, the terminal scales them to the cells.
const ASSUMED_CELL_PX: (u32, u32) = (10, 20);
/// Base64 bytes per kitty graphics escape (the protocol's limit).
const KITTY_CHUNK: usize = 4096;
/// Pixels with less alpha than this are drawn as the terminal's own background.
const OPAQUE_ALPHA: u8 = 128;

/// The cells (columns, rows) an image of `width`×`height` pixels takes: at most the
/// window's width and half its height, one image pixel per column at most, the aspect
/// ratio kept for cells `cell_aspect` times as tall as wide.
pub fn fit(width: u32, height: u32, term: &Terminal) -> (u32, u32) {
    let max_cols = term.cols.clamp(1, MAX_COLS);
    let max_rows = (term.rows / 2).clamp(1, MAX_ROWS);
    let aspect = cell_aspect(term);
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let cols = width.clamp(1, max_cols);
    let rows = (f64::from(cols) * h / (w * aspect)).round().max(1.0) as u32;
    if rows <= max_rows {
        return (cols, rows);
    }
    let cols = (f64::from(max_rows) * aspect * w / h).round() as u32;
    (cols.clamp(1, max_cols), max_rows)
}

/// How many times taller than wide a cell is (2 unless the terminal says otherwise).
fn cell_aspect(term: &Terminal) -> f64 {
    match term.cell_px {
        Some((w, h)) if w > 0 && h > 0 => (f64::from(h) / f64::from(w)).clamp(1.0, 4.0),
        _ => 2.0,
    }
}

/// The text that draws `image` on `term`, without a trailing newline.
///
/// # Errors
/// Encoding the PNG sent to kitty or iTerm2 failed.
pub fn render(image: &DynamicImage, term: &Terminal) -> Result<String, image::ImageError> {
    let (cols, rows) = fit(image.width(), image.height(), term);
    match term.protocol {
        Protocol::Blocks(palette) => {
            // Two pixels a cell; an image that already fits is drawn as it is (an odd
            // last row leaves the lower halves of its cells empty).
            let height = if cols == image.width() && image.height().div_ceil(2) == rows {
                image.height()
            } else {
                rows * 2
            };
            Ok(half_blocks(&scaled(image, cols, height), palette))
        }
        Protocol::Kitty => Ok(kitty(&png_for(image, cols, rows, term)?, cols, rows)),
        Protocol::Iterm => Ok(iterm(&png_for(image, cols, rows, term)?, cols, rows)),
    }
}

/// `image` resampled to exactly `width`×`height` RGBA pixels.
fn scaled(image: &DynamicImage, width: u32, height: u32) -> RgbaImage {
    if (image.width(), image.height()) == (width, height) {
        image.to_rgba8()
    } else {
        // Box-averaging (cheap on large images); converts only the small result.
        image.thumbnail_exact(width, height).to_rgba8()
    }
}

/// A PNG of `image` with no more pixels than `cols`×`rows` cells can show.
fn png_for(
    image: &DynamicImage,
    cols: u32,
    rows: u32,
    term: &Terminal,
) -> Result<Vec<u8>, image::ImageError> {
    let (cw, ch) = term.cell_px.unwrap_or(ASSUMED_CELL_PX);
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let scale = (f64::from(cols * cw) / w)
        .min(f64::from(rows * ch) / h)
        .min(4096.0 / w.max(h))
        .min(1.0);
    let width = ((w * scale).round() as u32).max(1);
    let height = ((h * scale).round() as u32).max(1);
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(scaled(image, width, height)).write_to(&mut png, ImageFormat::Png)?;
    Ok(png.into_inner())
}

/// kitty graphics protocol: transmit and display a PNG (`f=100`) in `cols`×`rows`
/// cells, in chunks, with replies suppressed (`q=2`) so nothing comes back on stdin.
fn kitty(png: &[u8], cols: u32, rows: u32) -> String {
    let data = BASE64.encode(png);
    let chunks: Vec<&str> = data
        .as_bytes()
        .chunks(KITTY_CHUNK)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    let mut out = String::with_capacity(data.len() + chunks.len() * 16 + 48);
    for (i, chunk) in chunks.iter().enumerate() {
        let more = u8::from(i + 1 < chunks.len());
        if i == 0 {
            let _ = write!(out, "\x1b_Ga=T,f=100,t=d,c={cols},r={rows},q=2,m={more};");
        } else {
            let _ = write!(out, "\x1b_Gm={more};");
        }
        out.push_str(chunk);
        out.push_str("\x1b\\");
    }
    out
}

/// iTerm2 inline image, `cols`×`rows` cells at most, aspect ratio kept.
fn iterm(png: &[u8], cols: u32, rows: u32) -> String {
    format!(
        "\x1b]1337;File=inline=1;size={};width={cols};height={rows};preserveAspectRatio=1:{}\x07",
        png.len(),
        BASE64.encode(png)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    /// The terminal's own foreground or background.
    Default,
    Rgb([u8; 3]),
}

/// Rows of `▀`, each cell's foreground the upper pixel and background the lower; a
/// transparent half shows the terminal's background. Every line ends with its colours
/// reset, so nothing bleeds past the image.
fn half_blocks(image: &RgbaImage, palette: Palette) -> String {
    let pixel = |x: u32, y: u32| {
        let p = image.get_pixel(x, y).0;
        if p[3] < OPAQUE_ALPHA {
            Colour::Default
        } else {
            Colour::Rgb([p[0], p[1], p[2]])
        }
    };
    let mut out = String::new();
    for y in (0..image.height()).step_by(2) {
        if y > 0 {
            out.push('\n');
        }
        let (mut fg, mut bg) = (Colour::Default, Colour::Default);
        for x in 0..image.width() {
            let top = pixel(x, y);
            let bottom = if y + 1 < image.height() {
                pixel(x, y + 1)
            } else {
                Colour::Default
            };
            let (ch, want_fg, want_bg) = match (top, bottom) {
                (Colour::Default, Colour::Default) => (' ', fg, Colour::Default),
                (Colour::Default, b) => ('▄', b, Colour::Default),
                (t, b) => ('▀', t, b),
            };
            set_colours(&mut out, (fg, bg), (want_fg, want_bg), palette);
            (fg, bg) = (want_fg, want_bg);
            out.push(ch);
        }
        if (fg, bg) != (Colour::Default, Colour::Default) {
            out.push_str("\x1b[0m");
        }
    }
    out
}

/// Writes one SGR sequence changing the colours from `now` to `want` (nothing if equal).
fn set_colours(out: &mut String, now: (Colour, Colour), want: (Colour, Colour), palette: Palette) {
    let mut params = Vec::with_capacity(2);
    if want.0 != now.0 {
        params.push(colour_param(want.0, "38", "39", palette));
    }
    if want.1 != now.1 {
        params.push(colour_param(want.1, "48", "49", palette));
    }
    if !params.is_empty() {
        let _ = write!(out, "\x1b[{}m", params.join(";"));
    }
}

fn colour_param(c: Colour, set: &str, default: &str, palette: Palette) -> String {
    match (c, palette) {
        (Colour::Default, _) => default.to_string(),
        (Colour::Rgb([r, g, b]), Palette::TrueColor) => format!("{set};2;{r};{g};{b}"),
        (Colour::Rgb(rgb), Palette::Ansi256) => format!("{set};5;{}", ansi256(rgb)),
    }
}

/// The nearest xterm 256-colour index: the 6×6×6 cube (16–231) or the grey ramp
/// (232–255), whichever is closer.
fn ansi256([r, g, b]: [u8; 3]) -> u8 {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    let level = |v: u8| match v {
        0..48 => 0,
        48..115 => 1,
        _ => (v - 35) / 40,
    };
    let (ri, gi, bi) = (level(r), level(g), level(b));
    let cube = [
        LEVELS[ri as usize],
        LEVELS[gi as usize],
        LEVELS[bi as usize],
    ];
    let mean = ((u16::from(r) + u16::from(g) + u16::from(b)) / 3) as u8;
    let grey_index = (mean.saturating_sub(3) / 10).min(23);
    let grey = 8 + 10 * grey_index;
    let distance = |c: [u8; 3]| -> u32 {
        [r, g, b]
            .iter()
            .zip(c)
            .map(|(&a, b)| (i32::from(a) - i32::from(b)).unsigned_abs().pow(2))
            .sum()
    };
    if distance([grey; 3]) < distance(cube) {
        232 + grey_index
    } else {
        16 + 36 * ri + 6 * gi + bi
    }
}

#[cfg(test)]
mod tests {
    use image::Rgba;

    use super::*;

    fn term(protocol: Protocol, cols: u32, rows: u32) -> Terminal {
        Terminal {
            protocol,
            cols,
            rows,
            cell_px: None,
        }
    }

    const TRUE: Protocol = Protocol::Blocks(Palette::TrueColor);

    #[test]
    fn fit_keeps_aspect_and_bounds() {
        let t = term(TRUE, 80, 24);
        // Wide: the window's width; 400×100 px at 2:1 cells is 80×10.
        assert_eq!(fit(400, 100, &t), (80, 10));
        // Square and large: half the rows (12), twice as many columns.
        assert_eq!(fit(1000, 1000, &t), (24, 12));
        // Tall: one row minimum width-wise, height bound.
        assert_eq!(fit(10, 5000, &t), (1, 12));
        // Small images are not enlarged beyond one pixel per column.
        assert_eq!(fit(6, 4, &t), (6, 2));
        assert_eq!(fit(1, 1, &t), (1, 1));
        // Degenerate windows still give at least one cell.
        assert_eq!(fit(100, 100, &term(TRUE, 0, 0)), (1, 1));
        // A reported cell size sets the aspect: 10×30 px cells are 3:1.
        let tall_cells = Terminal {
            cell_px: Some((10, 30)),
            ..t
        };
        assert_eq!(fit(300, 90, &tall_cells), (80, 8));
        // Huge windows are capped.
        assert_eq!(fit(10_000, 100, &term(TRUE, 5000, 1000)), (400, 2));
    }

    fn tiny() -> DynamicImage {
        // 2×3: red green / blue transparent / white black.
        let px = [
            [255, 0, 0, 255],
            [0, 255, 0, 255],
            [0, 0, 255, 255],
            [9, 9, 9, 0],
            [255, 255, 255, 255],
            [0, 0, 0, 255],
        ];
        DynamicImage::ImageRgba8(RgbaImage::from_fn(2, 3, |x, y| {
            Rgba(px[(y * 2 + x) as usize])
        }))
    }

    #[test]
    fn half_blocks_truecolour_exact_output() {
        let out = render(&tiny(), &term(TRUE, 80, 24)).unwrap();
        let expected = concat!(
            // red over blue, then green over transparent (background reset)
            "\x1b[38;2;255;0;0;48;2;0;0;255m▀\x1b[38;2;0;255;0;49m▀\x1b[0m\n",
            // last, odd row: white and black over the terminal's background
            "\x1b[38;2;255;255;255m▀\x1b[38;2;0;0;0m▀\x1b[0m",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn half_blocks_transparent_top_uses_lower_block_and_blank_cells_no_colour() {
        let img = RgbaImage::from_fn(2, 2, |x, y| match (x, y) {
            (0, 1) => Rgba([10, 20, 30, 255]),
            _ => Rgba([0, 0, 0, 0]),
        });
        let out = half_blocks(&img, Palette::TrueColor);
        assert_eq!(out, "\x1b[38;2;10;20;30m▄ \x1b[0m");
        let blank = RgbaImage::from_pixel(3, 2, Rgba([0, 0, 0, 0]));
        assert_eq!(half_blocks(&blank, Palette::TrueColor), "   ");
    }

    #[test]
    fn half_blocks_256_colours() {
        let out = render(&tiny(), &term(Protocol::Blocks(Palette::Ansi256), 80, 24)).unwrap();
        let expected = concat!(
            "\x1b[38;5;196;48;5;21m▀\x1b[38;5;46;49m▀\x1b[0m\n",
            "\x1b[38;5;231m▀\x1b[38;5;16m▀\x1b[0m",
        );
        assert_eq!(out, expected);
        assert!(!out.contains(";2;"), "no 24-bit colour: {out:?}");
    }

    #[test]
    fn ansi256_palette() {
        assert_eq!(ansi256([0, 0, 0]), 16);
        assert_eq!(ansi256([255, 255, 255]), 231);
        assert_eq!(ansi256([255, 0, 0]), 196);
        assert_eq!(ansi256([0, 0, 255]), 21);
        assert_eq!(ansi256([95, 135, 175]), 16 + 36 + 12 + 3);
        // Greys between cube levels go to the grey ramp.
        assert_eq!(ansi256([128, 128, 128]), 244);
        assert_eq!(ansi256([8, 8, 8]), 232);
        assert_eq!(ansi256([238, 238, 238]), 255);
    }

    #[test]
    fn half_blocks_fit_the_window_width() {
        // 200×20 px on a 40-column window: 40 columns, 40×4 px → 2 lines of 40 cells.
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(200, 20, Rgba([1, 2, 3, 255])));
        let out = render(&img, &term(TRUE, 40, 30)).unwrap();
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        for line in lines {
            assert_eq!(line.matches('▀').count(), 40, "{line:?}");
            assert!(line.starts_with("\x1b[38;2;1;2;3;48;2;1;2;3m"), "{line:?}");
            assert!(line.ends_with("\x1b[0m"), "{line:?}");
        }
        // Half the window's rows bound a tall image.
        let tall = DynamicImage::ImageRgba8(RgbaImage::from_pixel(50, 500, Rgba([9, 9, 9, 255])));
        let out = render(&tall, &term(TRUE, 100, 20)).unwrap();
        assert_eq!(out.split('\n').count(), 10);
        assert_eq!(out.split('\n').next().unwrap().matches('▀').count(), 2);
    }

    fn decode_png(b64: &str) -> DynamicImage {
        let png = BASE64.decode(b64).expect("base64 payload");
        image::load_from_memory_with_format(&png, ImageFormat::Png).expect("a PNG payload")
    }

    #[test]
    fn kitty_sends_a_chunked_png_sized_in_cells() {
        // Noise, so the PNG does not compress below one chunk.
        let mut seed = 7u32;
        let noisy = RgbaImage::from_fn(300, 150, |_, _| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            Rgba(seed.to_le_bytes())
        });
        let t = term(Protocol::Kitty, 80, 24);
        let out = render(&DynamicImage::ImageRgba8(noisy), &t).unwrap();
        assert!(
            out.starts_with("\x1b_Ga=T,f=100,t=d,c=48,r=12,q=2,m=1;"),
            "{}",
            &out[..60]
        );
        let mut payload = String::new();
        let escapes: Vec<&str> = out.split_terminator("\x1b\\").collect();
        assert!(escapes.len() > 2, "several chunks");
        for (i, e) in escapes.iter().enumerate() {
            let (head, data) = e.split_once(';').expect("control data ; payload");
            let last = i + 1 == escapes.len();
            assert!(head.ends_with(if last { "m=0" } else { "m=1" }), "{head}");
            if i > 0 {
                assert_eq!(*head, format!("\x1b_Gm={}", u8::from(!last)));
            }
            assert!(data.len() <= KITTY_CHUNK);
            payload.push_str(data);
        }
        // 48×12 cells of 10×20 px can show 480×240: the 300×150 image goes as it is.
        let png = decode_png(&payload);
        assert_eq!((png.width(), png.height()), (300, 150));
    }

    #[test]
    fn graphics_protocols_send_no_more_pixels_than_the_cells_show() {
        let big = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4000, 2000, Rgba([5, 5, 5, 255])));
        let t = Terminal {
            cell_px: Some((8, 16)),
            ..term(Protocol::Iterm, 100, 40)
        };
        let out = render(&big, &t).unwrap();
        let rest = out
            .strip_prefix("\x1b]1337;File=inline=1;size=")
            .expect("iTerm2 escape");
        let (size, rest) = rest.split_once(';').unwrap();
        assert!(
            rest.starts_with("width=80;height=20;preserveAspectRatio=1:"),
            "{rest:.60}"
        );
        let b64 = rest
            .split_once(':')
            .unwrap()
            .1
            .strip_suffix('\x07')
            .unwrap();
        assert_eq!(
            BASE64.decode(b64).unwrap().len(),
            size.parse::<usize>().unwrap()
        );
        let png = decode_png(b64);
        assert_eq!((png.width(), png.height()), (640, 320));
    }
}
