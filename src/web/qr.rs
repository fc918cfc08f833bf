//! QR codes of a payment page URL (spec 01: for `native`, "generate a QR code image using this
//! URL"): an SVG for inline use and `qr.svg`, and a PNG for `qr.png`. Built with qrcodegen, and
//! kept per URL in a small cache: the order page, `qr.svg` and `qr.png` ask for the same code
//! again and again while the shopper waits, and encoding (the mask search) is the costly part.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of white border around the code (the QR standard asks for 4).
const QUIET_ZONE: i32 = 4;

/// Pixels per module of `qr.png` (a version-4 code is 41 × 8 = 328 pixels wide).
pub const PNG_SCALE: u32 = 8;

/// Encodes `text` at error-correction level M (qrcodegen raises it when that costs no size). The
/// mask is the one of eight with the lowest penalty (the QR standard's rules against finder-like
/// patterns, long runs, blocks and imbalance, which make cameras misread): that search is ~98% of
/// an encode's instructions, and the reason [`QrCache`] exists. A fixed mask would be ~20 times
/// faster and would print some codes that scan badly.
pub fn encode(text: &str) -> Result<QrCode, qrcodegen::DataTooLong> {
    QrCode::encode_text(text, QrCodeEcc::Medium)
}

/// An SVG of the code: one path, a rectangle per horizontal run of dark modules
/// (`M{x},{y}h{n}v1h-{n}z`), crisp at any size. A run instead of a square per module halves the
/// path (4.2 KB instead of 7.6 KB for a version-4 code) and takes a third of the time to draw.
pub fn svg(code: &QrCode) -> String {
    let size = code.size();
    let dim = size + QUIET_ZONE * 2;
    const HEAD: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 "#;
    const ATTRS: &str = concat!(
        r##"" shape-rendering="crispEdges" role="img" aria-label="QR code">"##,
        r##"<rect width="100%" height="100%" fill="#fff"/><path d=""##
    );
    const TAIL: &str = r##"" fill="#000"/></svg>"##;
    // About 13 bytes a run, a run every few modules: size² × 4 is room enough. Built as bytes
    // (all ASCII) and checked once at the end.
    let mut out =
        Vec::with_capacity(HEAD.len() + ATTRS.len() + TAIL.len() + 8 + (size * size) as usize * 4);
    out.extend_from_slice(HEAD.as_bytes());
    push_number(&mut out, dim as u32);
    out.push(b' ');
    push_number(&mut out, dim as u32);
    out.extend_from_slice(ATTRS.as_bytes());
    for y in 0..size {
        // Where the dark run being read started; one module read per module.
        let mut run_start = None;
        for x in 0..=size {
            let dark = x < size && code.get_module(x, y);
            match (dark, run_start) {
                (true, None) => run_start = Some(x),
                (false, Some(start)) => {
                    push_run(&mut out, start + QUIET_ZONE, y + QUIET_ZONE, x - start);
                    run_start = None;
                }
                _ => {}
            }
        }
    }
    out.extend_from_slice(TAIL.as_bytes());
    String::from_utf8(out).expect("the SVG is ASCII")
}

/// `M{x},{y}h{n}v1h-{n}z`: the 1 × n rectangle of a run of `n` dark modules from (x, y).
fn push_run(out: &mut Vec<u8>, x: i32, y: i32, n: i32) {
    out.push(b'M');
    push_number(out, x as u32);
    out.push(b',');
    push_number(out, y as u32);
    out.push(b'h');
    push_number(out, n as u32);
    out.extend_from_slice(b"v1h-");
    push_number(out, n as u32);
    out.push(b'z');
}

/// Appends `n` in decimal ASCII without going through `fmt` (a few instructions a digit; every
/// coordinate is below 186).
fn push_number(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// A black-and-white PNG of the code, `scale` pixels per module, one bit per pixel (0 black,
/// 1 white). Each module row is packed once and repeated `scale` times.
pub fn png(code: &QrCode, scale: u32) -> Vec<u8> {
    let scale = scale.max(1) as usize;
    let modules = (code.size() + QUIET_ZONE * 2) as usize;
    let side = modules * scale;
    let row_bytes = side.div_ceil(8);
    let mut pixels = Vec::with_capacity(row_bytes * side);
    let mut row = vec![0u8; row_bytes];
    for my in 0..modules {
        row.fill(0);
        for mx in 0..modules {
            // Outside the code (the quiet zone) get_module answers light.
            if !code.get_module(mx as i32 - QUIET_ZONE, my as i32 - QUIET_ZONE) {
                for x in mx * scale..(mx + 1) * scale {
                    row[x / 8] |= 0x80 >> (x % 8);
                }
            }
        }
        for _ in 0..scale {
            pixels.extend_from_slice(&row);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    // Each pixel row repeats the one above `scale - 1` times out of `scale`: the Up filter that
    // `Fastest` uses turns those into zeros, and its deflate packs them to about 2 KB. The 8-bit
    // image this replaced, at the default compression (zlib level 6, a filter tried per row),
    // took 40 times the instructions, nearly all in zlib (docs/BENCHMARKS.md).
    encoder.set_compression(png::Compression::Fastest);
    let mut writer = encoder.write_header().expect("PNG header to a Vec");
    writer.write_image_data(&pixels).expect("PNG data to a Vec");
    writer.finish().expect("PNG to a Vec");
    out
}

/// One payment page URL's code and its images: the SVG made with the code, the PNG on first
/// request (most shoppers never download it).
pub struct QrImages {
    code: QrCode,
    svg: String,
    png: OnceLock<Vec<u8>>,
}

impl QrImages {
    /// Encodes `url` and draws its SVG.
    pub fn new(url: &str) -> Result<Self, qrcodegen::DataTooLong> {
        let code = encode(url)?;
        let svg = svg(&code);
        Ok(Self {
            code,
            svg,
            png: OnceLock::new(),
        })
    }

    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// The PNG at [`PNG_SCALE`].
    pub fn png(&self) -> &[u8] {
        self.png.get_or_init(|| png(&self.code, PNG_SCALE))
    }
}

/// The codes of the last `capacity` payment page URLs asked for, shared by all workers (in
/// `AppState`; each instance has its own). Bounded, first in first out: a URL belongs to one
/// pending order, which expires (`ORDER_EXPIRY_SECS`, 10 min by default), so the oldest entry is
/// the one least likely needed. A miss only costs an encode; the lock is not held while encoding
/// (two workers missing the same URL at once both encode, and the first one stored is kept).
pub struct QrCache {
    capacity: usize,
    entries: Mutex<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    by_url: HashMap<String, Arc<QrImages>>,
    /// URLs in the order they were added: the front is evicted first.
    order: VecDeque<String>,
}

impl QrCache {
    /// At most about 2 MiB: a 60-character URL's entry (version 4) holds a 4.2 KB SVG, 1.1 KB
    /// of modules and, once asked for, a 1.5 KB PNG.
    pub const DEFAULT_CAPACITY: usize = 256;

    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        }
    }

    /// The images of `url`, encoded on the first request only.
    pub fn get(&self, url: &str) -> Result<Arc<QrImages>, qrcodegen::DataTooLong> {
        if let Some(found) = self.lock().by_url.get(url) {
            return Ok(found.clone());
        }
        let made = Arc::new(QrImages::new(url)?);
        let mut entries = self.lock();
        // Another worker may have encoded the same URL meanwhile: keep the first.
        if let Some(found) = entries.by_url.get(url) {
            return Ok(found.clone());
        }
        while entries.order.len() >= self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.by_url.remove(&oldest);
            }
        }
        entries.order.push_back(url.to_owned());
        entries.by_url.insert(url.to_owned(), made.clone());
        Ok(made)
    }

    /// How many URLs are kept now.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        // Nothing under the lock can panic half-way through an update; a poisoned lock still
        // holds a consistent map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for QrCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG of ours with a real QR decoder (rqrr), expanded to 8-bit grey first.
    fn decode_png(bytes: &[u8]) -> String {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().unwrap().1
    }

    /// The dark modules of a code, in image coordinates (quiet zone included).
    fn dark_modules(code: &QrCode) -> Vec<(i32, i32)> {
        (0..code.size())
            .flat_map(|y| (0..code.size()).map(move |x| (x, y)))
            .filter(|&(x, y)| code.get_module(x, y))
            .map(|(x, y)| (x + QUIET_ZONE, y + QUIET_ZONE))
            .collect()
    }

    /// The modules an SVG of ours paints: each `M{x},{y}h{n}v1h-{n}z` of its path is the run of
    /// `n` modules from (x, y) rightwards. Fails on any other path command.
    fn painted_modules(svg: &str) -> Vec<(i32, i32)> {
        let path = svg
            .split(r#"<path d=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("one path");
        let mut painted = Vec::new();
        for run in path.split_terminator('z') {
            let rest = run.strip_prefix('M').expect("a run starts with M");
            let (x, rest) = rest.split_once(',').unwrap();
            let (y, rest) = rest.split_once('h').unwrap();
            let (n, back) = rest.split_once("v1h-").unwrap();
            assert_eq!(n, back, "the run closes on itself: {run}");
            let (x, y, n): (i32, i32, i32) =
                (x.parse().unwrap(), y.parse().unwrap(), n.parse().unwrap());
            assert!(n >= 1);
            // Runs are maximal: none starts where the previous one in its row ended.
            assert_ne!(
                painted.last(),
                Some(&(x - 1, y)),
                "run {run} continues the last"
            );
            painted.extend((x..x + n).map(|x| (x, y)));
        }
        painted
    }

    const URLS: [&str; 3] = [
        "weixin://wxpay/bizpayurl?pr=AbCdEfG",
        "http://127.0.0.1:8080/sandbox/wechat/scan/1",
        "http://192.168.0.12:8080/sandbox/wechat/scan/26112115301200000001",
    ];

    #[test]
    fn png_decodes_to_exactly_the_url() {
        for url in URLS {
            let code = encode(url).unwrap();
            assert_eq!(decode_png(&png(&code, PNG_SCALE)), url);
            // An odd scale leaves a partial byte at the end of each row.
            assert_eq!(decode_png(&png(&code, 5)), url);
        }
    }

    #[test]
    fn svg_draws_exactly_the_dark_modules() {
        for url in URLS {
            let code = encode(url).unwrap();
            let svg = svg(&code);
            let mut painted = painted_modules(&svg);
            let count = painted.len();
            painted.sort_unstable();
            painted.dedup();
            assert_eq!(painted.len(), count, "no module painted twice");
            let mut dark = dark_modules(&code);
            dark.sort_unstable();
            assert_eq!(painted, dark);
            let dim = code.size() + 2 * QUIET_ZONE;
            assert!(svg.starts_with(&format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {dim} {dim}""#
            )));
            assert!(svg.ends_with("</svg>"));
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 41, 100, 185, u32::MAX] {
            push_number(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(out, b"0 7 10 41 100 185 4294967295 ");
    }

    #[test]
    fn cache_encodes_a_url_once_and_serves_the_same_images() {
        let cache = QrCache::new(4);
        let url = URLS[2];
        let first = cache.get(url).unwrap();
        let again = cache.get(url).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(cache.len(), 1);
        let code = encode(url).unwrap();
        assert_eq!(first.svg(), svg(&code));
        assert_eq!(decode_png(first.png()), url);
        assert!(
            std::ptr::eq(first.png(), again.png()),
            "the PNG is made once"
        );
    }

    #[test]
    fn cache_is_bounded_and_drops_the_oldest_url() {
        let cache = QrCache::new(2);
        let a = cache.get(URLS[0]).unwrap();
        cache.get(URLS[1]).unwrap();
        let c = cache.get(URLS[2]).unwrap();
        assert_eq!(cache.len(), 2);
        // The first URL was dropped: asking again encodes it anew.
        let a_again = cache.get(URLS[0]).unwrap();
        assert!(!Arc::ptr_eq(&a, &a_again));
        assert_eq!(a.svg(), a_again.svg());
        assert_eq!(cache.len(), 2);
        // That pushed out the second URL; the third is still kept.
        assert!(Arc::ptr_eq(&c, &cache.get(URLS[2]).unwrap()));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn cache_refuses_text_too_long_for_a_qr_code() {
        let cache = QrCache::default();
        assert!(cache.get(&"x".repeat(3000)).is_err());
        assert!(cache.is_empty());
    }
}
