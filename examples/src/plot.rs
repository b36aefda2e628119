//! A small PNG canvas: pixels, lines, text in a built-in 5x7 pixel font, panels pasted into a
//! larger canvas, and a PNG encoder; the charts drawn on it are in [`crate::chart`].
//!
//! The testnet report needs a few charts; this is a few hundred lines, where a plotting crate
//! (plotters) would bring font rendering (system fonts through fontconfig, or a bundled TTF)
//! and an image stack into the build. The pixels are compressed with `miniz_oxide` (pure Rust
//! deflate, what `png` and `flate2` use): the flat colours of a chart shrink about fiftyfold.

use std::io::{self, Write};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// A canvas of RGB pixels.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Sets one pixel (outside the canvas: ignored).
    pub fn set(&mut self, x: i64, y: i64, colour: Rgb) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&colour);
    }

    /// Fills a rectangle.
    pub fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, colour);
            }
        }
    }

    /// Draws a line `thickness` pixels wide.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), thickness: i64, colour: Rgb) {
        let steps = ((to.0 - from.0).abs().max((to.1 - from.1).abs()) as usize).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let x = (from.0 + (to.0 - from.0) * t).round() as i64;
            let y = (from.1 + (to.1 - from.1) * t).round() as i64;
            let r = thickness / 2;
            self.fill(
                x - r,
                y - r,
                x - r + thickness - 1,
                y - r + thickness - 1,
                colour,
            );
        }
    }

    /// Writes `text` (letters are drawn upper-case) at `scale` times the 5x7 font.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, colour: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let glyph = glyph(c.to_ascii_uppercase());
            let left = x + i as i64 * 6 * scale;
            for (col, bits) in glyph.iter().enumerate() {
                for row in 0..7 {
                    if bits >> row & 1 == 1 {
                        let px = left + col as i64 * scale;
                        let py = y + row * scale;
                        self.fill(px, py, px + scale - 1, py + scale - 1, colour);
                    }
                }
            }
        }
    }

    /// Copies `other` onto this canvas with its top left corner at `(x, y)` (clipped).
    pub fn paste(&mut self, x: i64, y: i64, other: &Canvas) {
        for oy in 0..other.height {
            for ox in 0..other.width {
                let i = (oy * other.width + ox) * 3;
                let c = [other.pixels[i], other.pixels[i + 1], other.pixels[i + 2]];
                self.set(x + ox as i64, y + oy as i64, c);
            }
        }
    }

    /// Width and height in pixels.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: i64) -> i64 {
        text.chars().count() as i64 * 6 * scale
    }

    /// Encodes the canvas as a PNG (8-bit RGB, deflate-compressed).
    pub fn write_png(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(b"\x89PNG\r\n\x1a\n")?;
        let mut header = Vec::new();
        header.extend_from_slice(&(self.width as u32).to_be_bytes());
        header.extend_from_slice(&(self.height as u32).to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(out, b"IHDR", &header)?;
        let mut raw = Vec::with_capacity((self.width * 3 + 1) * self.height);
        for row in self.pixels.chunks(self.width * 3) {
            raw.push(0); // no filter
            raw.extend_from_slice(row);
        }
        chunk(
            out,
            b"IDAT",
            &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9),
        )?;
        chunk(out, b"IEND", &[])
    }
}

fn chunk(out: &mut impl Write, kind: &[u8; 4], data: &[u8]) -> io::Result<()> {
    out.write_all(&(data.len() as u32).to_be_bytes())?;
    out.write_all(kind)?;
    out.write_all(data)?;
    let mut crc = Crc::default();
    crc.update(kind);
    crc.update(data);
    out.write_all(&crc.finish().to_be_bytes())
}

#[derive(Default)]
struct Crc(u32);

impl Crc {
    fn update(&mut self, data: &[u8]) {
        let mut c = !self.0;
        for &byte in data {
            c ^= byte as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        self.0 = !c;
    }

    fn finish(&self) -> u32 {
        self.0
    }
}

/// The classic 5x7 font, one byte per column, least significant bit at the top.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0x3E, 0x51, 0x49, 0x45, 0x3E],
        '1' => [0x00, 0x42, 0x7F, 0x40, 0x00],
        '2' => [0x42, 0x61, 0x51, 0x49, 0x46],
        '3' => [0x21, 0x41, 0x45, 0x4B, 0x31],
        '4' => [0x18, 0x14, 0x12, 0x7F, 0x10],
        '5' => [0x27, 0x45, 0x45, 0x45, 0x39],
        '6' => [0x3C, 0x4A, 0x49, 0x49, 0x30],
        '7' => [0x01, 0x71, 0x09, 0x05, 0x03],
        '8' => [0x36, 0x49, 0x49, 0x49, 0x36],
        '9' => [0x06, 0x49, 0x49, 0x29, 0x1E],
        'A' => [0x7E, 0x11, 0x11, 0x11, 0x7E],
        'B' => [0x7F, 0x49, 0x49, 0x49, 0x36],
        'C' => [0x3E, 0x41, 0x41, 0x41, 0x22],
        'D' => [0x7F, 0x41, 0x41, 0x22, 0x1C],
        'E' => [0x7F, 0x49, 0x49, 0x49, 0x41],
        'F' => [0x7F, 0x09, 0x09, 0x01, 0x01],
        'G' => [0x3E, 0x41, 0x41, 0x51, 0x32],
        'H' => [0x7F, 0x08, 0x08, 0x08, 0x7F],
        'I' => [0x00, 0x41, 0x7F, 0x41, 0x00],
        'J' => [0x20, 0x40, 0x41, 0x3F, 0x01],
        'K' => [0x7F, 0x08, 0x14, 0x22, 0x41],
        'L' => [0x7F, 0x40, 0x40, 0x40, 0x40],
        'M' => [0x7F, 0x02, 0x04, 0x02, 0x7F],
        'N' => [0x7F, 0x04, 0x08, 0x10, 0x7F],
        'O' => [0x3E, 0x41, 0x41, 0x41, 0x3E],
        'P' => [0x7F, 0x09, 0x09, 0x09, 0x06],
        'Q' => [0x3E, 0x41, 0x51, 0x21, 0x5E],
        'R' => [0x7F, 0x09, 0x19, 0x29, 0x46],
        'S' => [0x46, 0x49, 0x49, 0x49, 0x31],
        'T' => [0x01, 0x01, 0x7F, 0x01, 0x01],
        'U' => [0x3F, 0x40, 0x40, 0x40, 0x3F],
        'V' => [0x1F, 0x20, 0x40, 0x20, 0x1F],
        'W' => [0x7F, 0x20, 0x18, 0x20, 0x7F],
        'X' => [0x63, 0x14, 0x08, 0x14, 0x63],
        'Y' => [0x03, 0x04, 0x78, 0x04, 0x03],
        'Z' => [0x61, 0x51, 0x49, 0x45, 0x43],
        '.' => [0x00, 0x60, 0x60, 0x00, 0x00],
        ',' => [0x00, 0x50, 0x30, 0x00, 0x00],
        ':' => [0x00, 0x36, 0x36, 0x00, 0x00],
        '-' => [0x08, 0x08, 0x08, 0x08, 0x08],
        '=' => [0x14, 0x14, 0x14, 0x14, 0x14],
        '(' => [0x00, 0x1C, 0x22, 0x41, 0x00],
        ')' => [0x00, 0x41, 0x22, 0x1C, 0x00],
        '/' => [0x20, 0x10, 0x08, 0x04, 0x02],
        '%' => [0x23, 0x13, 0x08, 0x64, 0x62],
        '+' => [0x08, 0x08, 0x3E, 0x08, 0x08],
        '>' => [0x00, 0x41, 0x22, 0x14, 0x08],
        '<' => [0x08, 0x14, 0x22, 0x41, 0x00],
        '^' => [0x04, 0x02, 0x01, 0x02, 0x04],
        _ => [0x00; 5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_its_known_value() {
        let mut crc = Crc::default();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xCBF4_3926);
    }

    #[test]
    fn the_pixels_come_back_from_the_compressed_image_data() {
        let mut c = Canvas::new(300, 200);
        c.line((0.0, 0.0), (299.0, 199.0), 2, [200, 40, 40]);
        let mut out = Vec::new();
        c.write_png(&mut out).unwrap();
        // IHDR is 13 bytes: the IDAT chunk follows at 8 + 25.
        let at = 8 + 25;
        assert_eq!(&out[at + 4..at + 8], b"IDAT");
        let len = u32::from_be_bytes(out[at..at + 4].try_into().unwrap()) as usize;
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&out[at + 8..at + 8 + len]).unwrap();
        assert_eq!(raw.len(), (300 * 3 + 1) * 200);
        let rows: Vec<u8> = raw
            .chunks(300 * 3 + 1)
            .flat_map(|r| r[1..].to_vec())
            .collect();
        assert_eq!(rows, c.pixels);
        assert!(
            len * 20 < raw.len(),
            "a chart compresses: {len} of {} bytes",
            raw.len()
        );
    }

    #[test]
    fn png_has_the_right_layout() {
        let mut c = Canvas::new(3, 2);
        c.set(1, 1, [1, 2, 3]);
        let mut out = Vec::new();
        c.write_png(&mut out).unwrap();
        assert_eq!(&out[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&out[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(out[16..20].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(out[20..24].try_into().unwrap()), 2);
        assert_eq!(&out[out.len() - 8..out.len() - 4], b"IEND");
    }
}
