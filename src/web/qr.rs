//! QR codes of a payment page URL (spec 01: for `native`, "generate a QR code image using this
//! URL"): an SVG for inline use and `qr.svg`, and a PNG for `qr.png`. Built with qrcodegen.

use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of white border around the code (the QR standard asks for 4).
const QUIET_ZONE: i32 = 4;

/// Encodes `text` at error-correction level M (qrcodegen raises it when that costs no size).
pub fn encode(text: &str) -> Result<QrCode, qrcodegen::DataTooLong> {
    QrCode::encode_text(text, QrCodeEcc::Medium)
}

/// An SVG of the code: one path of unit squares, crisp at any size.
pub fn svg(code: &QrCode) -> String {
    let size = code.size();
    let dim = size + QUIET_ZONE * 2;
    let mut path = String::with_capacity((size * size) as usize * 4);
    for y in 0..size {
        for x in 0..size {
            if code.get_module(x, y) {
                use std::fmt::Write;
                let _ = write!(path, "M{},{}h1v1h-1z", x + QUIET_ZONE, y + QUIET_ZONE);
            }
        }
    }
    format!(
        concat!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {dim} {dim}" "##,
            r##"shape-rendering="crispEdges" role="img" aria-label="QR code">"##,
            r##"<rect width="100%" height="100%" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
        ),
        dim = dim,
        path = path
    )
}

/// A greyscale PNG of the code, `scale` pixels per module.
pub fn png(code: &QrCode, scale: u32) -> Vec<u8> {
    let scale = scale.max(1);
    let modules = (code.size() + QUIET_ZONE * 2) as u32;
    let side = modules * scale;
    let mut pixels = vec![255u8; (side * side) as usize];
    for y in 0..side {
        for x in 0..side {
            let mx = (x / scale) as i32 - QUIET_ZONE;
            let my = (y / scale) as i32 - QUIET_ZONE;
            if code.get_module(mx, my) {
                pixels[(y * side + x) as usize] = 0;
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("PNG header to a Vec");
    writer.write_image_data(&pixels).expect("PNG data to a Vec");
    writer.finish().expect("PNG to a Vec");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG of ours with a real QR decoder (rqrr).
    fn decode_png(bytes: &[u8]) -> String {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().unwrap().1
    }

    #[test]
    fn png_decodes_to_exactly_the_url() {
        for url in [
            "weixin://wxpay/bizpayurl?pr=AbCdEfG",
            "http://192.168.0.12:8080/sandbox/wechat/scan/26112115301200000001",
        ] {
            let code = encode(url).unwrap();
            assert_eq!(decode_png(&png(&code, 6)), url);
        }
    }

    #[test]
    fn svg_draws_every_dark_module() {
        let code = encode("http://127.0.0.1:8080/sandbox/wechat/scan/1").unwrap();
        let svg = svg(&code);
        let dark = (0..code.size())
            .flat_map(|y| (0..code.size()).map(move |x| (x, y)))
            .filter(|(x, y)| code.get_module(*x, *y))
            .count();
        assert_eq!(svg.matches("h1v1h-1z").count(), dark);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
