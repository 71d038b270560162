//! The certificate of acceptance (issue #17): one verified event's evidence as a PDF, written in
//! process with `pdf-writer` (docs/decisions.md says why that crate). The text uses the PDF's standard
//! Helvetica and Courier, which every reader has, so no font is embedded: characters outside their
//! Windows-1252 repertoire print as `?` — the evidence JSON beside the certificate keeps them exact,
//! and the digest printed here is of that JSON.
//!
//! Layout is a column of lines, wrapped by the fonts' published widths and broken into A4 pages.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::ledger::{Evidence, Link};
use crate::model::{Action, Timestamp};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 56.0;
const LABEL_W: f32 = 120.0;

#[derive(Clone, Copy, PartialEq)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn resource(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
            Font::Mono => Name(b"F3"),
        }
    }

    /// The width of `text` at `size`, from Helvetica's and Courier's metrics (bold is taken 8 %
    /// wider than regular, enough for wrapping).
    fn width(self, text: &str, size: f32) -> f32 {
        let units: u32 = match self {
            Font::Mono => 600 * text.chars().count() as u32,
            Font::Regular | Font::Bold => text.chars().map(helvetica_width).sum(),
        };
        let w = units as f32 * size / 1000.0;
        if self == Font::Bold { w * 1.08 } else { w }
    }
}

/// Helvetica's advance widths (per 1000 em) for printable ASCII; other characters are taken as wide
/// as a digit.
fn helvetica_width(c: char) -> u32 {
    const ASCII: [u16; 95] = [
        278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556,
        556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722,
        722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722,
        667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556,
        556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500,
        500, 334, 260, 334, 584,
    ];
    match c as u32 {
        n @ 32..=126 => u32::from(ASCII[(n - 32) as usize]),
        _ => 556,
    }
}

/// `text` in WinAnsiEncoding (Windows-1252), `?` for what it cannot show.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c as u32 {
            n @ (0x20..=0x7e | 0xa0..=0xff) => n as u8,
            _ => match c {
                '€' => 0x80,
                '‚' => 0x82,
                '„' => 0x84,
                '…' => 0x85,
                '‘' => 0x91,
                '’' => 0x92,
                '“' => 0x93,
                '”' => 0x94,
                '•' => 0x95,
                '–' => 0x96,
                '—' => 0x97,
                '™' => 0x99,
                '\t' => b' ',
                _ => b'?',
            },
        })
        .collect()
}

/// One line placed on a page.
struct Placed {
    font: Font,
    size: f32,
    x: f32,
    y: f32,
    text: String,
}

/// Lines flowing down A4 pages.
struct Flow {
    pages: Vec<Vec<Placed>>,
    y: f32,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            pages: vec![Vec::new()],
            y: PAGE_H - MARGIN,
        }
    }

    fn room(&mut self, height: f32) {
        if self.y - height < MARGIN + 20.0 {
            self.pages.push(Vec::new());
            self.y = PAGE_H - MARGIN;
        }
    }

    fn gap(&mut self, h: f32) {
        self.y -= h;
    }

    /// `text` wrapped into `width` from `x`, each line `size * 1.35` below the last.
    fn paragraph(&mut self, font: Font, size: f32, x: f32, width: f32, text: &str) {
        for line in wrap(font, size, width, text) {
            self.room(size * 1.35);
            self.y -= size * 1.35;
            let y = self.y;
            self.pages.last_mut().expect("a page").push(Placed {
                font,
                size,
                x,
                y,
                text: line,
            });
        }
    }

    /// A label and its value side by side; the value wraps under itself.
    fn field(&mut self, label: &str, value: &str, mono: bool) {
        let size = 9.5;
        // Courier a little smaller, so a 64-digit hash stays on one line.
        let (font, value_size) = if mono {
            (Font::Mono, 8.5)
        } else {
            (Font::Regular, size)
        };
        let lines = wrap(font, value_size, PAGE_W - 2.0 * MARGIN - LABEL_W, value);
        for (i, text) in lines.into_iter().enumerate() {
            self.room(size * 1.35);
            self.y -= size * 1.35;
            let y = self.y;
            let page = self.pages.last_mut().expect("a page");
            if i == 0 {
                page.push(Placed {
                    font: Font::Bold,
                    size,
                    x: MARGIN,
                    y,
                    text: label.to_string(),
                });
            }
            page.push(Placed {
                font,
                size: value_size,
                x: MARGIN + LABEL_W,
                y,
                text,
            });
        }
        self.y -= 2.0;
    }

    fn heading(&mut self, text: &str) {
        self.gap(10.0);
        self.room(40.0);
        self.paragraph(Font::Bold, 12.0, MARGIN, PAGE_W - 2.0 * MARGIN, text);
        self.gap(3.0);
    }
}

/// Greedy word wrap; a word longer than the line (a hash, a URL) is cut where it must be. Line
/// breaks in `text` are kept.
fn wrap(font: Font, size: f32, width: f32, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split('\n') {
        let mut line = String::new();
        for word in raw.split(' ') {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if font.width(&candidate, size) <= width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let mut rest = word.to_string();
            while font.width(&rest, size) > width {
                let mut cut = rest.len();
                while cut > 1 && font.width(&rest[..cut], size) > width {
                    cut = rest[..cut - 1]
                        .char_indices()
                        .last()
                        .map_or(1, |(i, _)| i.max(1));
                }
                out.push(rest[..cut].to_string());
                rest = rest[cut..].to_string();
            }
            line = rest;
        }
        out.push(line);
    }
    out
}

/// The template's HTML as reading text: block ends and `<br>` become line breaks, other tags go,
/// the common entities are decoded. (The evidence JSON holds the exact markup.)
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end]
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if matches!(
            tag.as_str(),
            "br" | "p"
                | "div"
                | "li"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "h5"
                | "h6"
                | "tr"
                | "ul"
                | "ol"
        ) && !out.ends_with('\n')
            && !out.is_empty()
        {
            out.push('\n');
        }
        if tag == "li" && !rest[start + 1..].starts_with('/') {
            out.push_str("• ");
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let decoded = decode_entities(&out);
    decoded
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let name = &after[..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The certificate of one event, generated at `now`.
pub fn render(e: &Evidence, link: &Link, now: Timestamp) -> Vec<u8> {
    let mut flow = Flow::new();
    let width = PAGE_W - 2.0 * MARGIN;
    let title = match e.action {
        Action::Accepted => "Certificate of acceptance",
        Action::Declined => "Certificate of a declined clickwrap",
    };
    flow.paragraph(Font::Bold, 20.0, MARGIN, width, title);
    flow.gap(4.0);
    flow.paragraph(
        Font::Regular,
        9.0,
        MARGIN,
        width,
        "This certificate reproduces the evidence clicktermd holds of one verified clickwrap \
         event and its place in the tamper-evident ledger of every verified event.",
    );
    flow.heading("The event");
    let version = format!("{}.{}", e.major, e.minor);
    let opt = |t: Option<Timestamp>| t.map_or("-".to_string(), Timestamp::to_rfc3339);
    let rows: [(&str, String, bool); 15] = [
        ("Event", e.event_id.clone(), true),
        ("Status", e.action.as_str().to_string(), false),
        ("End user", e.end_user_id.clone(), false),
        ("Integration", e.app_id.clone(), true),
        ("Template", e.template_name.clone(), false),
        ("Template id", e.template_id.clone(), true),
        ("Template version", version, false),
        ("Language", e.language.clone(), false),
        ("Effective since", e.effective_at.to_rfc3339(), false),
        ("Presented at", opt(e.presented_at), false),
        ("Action at", e.action_at.to_rfc3339(), false),
        ("Verified at", e.verified_at.to_rfc3339(), false),
        (
            "Client address",
            e.client_address.clone().unwrap_or_else(|| "-".into()),
            false,
        ),
        (
            "User agent",
            e.user_agent.clone().unwrap_or_else(|| "-".into()),
            false,
        ),
        (
            "Placeholders",
            e.template_placeholders
                .clone()
                .unwrap_or_else(|| "-".into()),
            false,
        ),
    ];
    for (label, value, mono) in &rows {
        flow.field(label, value, *mono);
    }
    flow.heading("The text the end user was shown");
    match (&e.title, &e.content) {
        (Some(t), Some(c)) => {
            flow.paragraph(Font::Bold, 11.0, MARGIN, width, &html_to_text(t));
            flow.gap(4.0);
            flow.paragraph(Font::Regular, 9.5, MARGIN, width, &html_to_text(c));
            if let Some(inline) = &e.inline_content {
                flow.gap(4.0);
                flow.paragraph(Font::Regular, 9.5, MARGIN, width, &html_to_text(inline));
            }
        }
        _ => flow.paragraph(
            Font::Regular,
            9.5,
            MARGIN,
            width,
            "(the template version's text is not in the database)",
        ),
    }
    flow.heading("The ledger");
    flow.field("Chain position", &link.position.to_string(), false);
    flow.field("Evidence digest", &link.digest.to_hex(), true);
    flow.field("Previous hash", &link.previous.to_hex(), true);
    flow.field("Link hash", &link.hash.to_hex(), true);
    flow.gap(6.0);
    flow.paragraph(
        Font::Regular,
        8.5,
        MARGIN,
        width,
        "The evidence digest is SHA-256 of the event's evidence document (GET \
         /api/v1/events/{id}/evidence) in its canonical encoding; the link hash is SHA-256 of the \
         previous hash, the position as 8 bytes big-endian and the digest. Any later change to the \
         event or to an earlier link changes the hashes: `clicktermd verify-ledger` checks the whole \
         chain, and a chain head noted elsewhere proves that nothing before it changed.",
    );
    write_pdf(&flow, e, now)
}

fn write_pdf(flow: &Flow, e: &Evidence, now: Timestamp) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let info = Ref::new(3);
    let fonts = [
        (Font::Regular, Ref::new(4), "Helvetica"),
        (Font::Bold, Ref::new(5), "Helvetica-Bold"),
        (Font::Mono, Ref::new(6), "Courier"),
    ];
    let first_page = 7;
    let count = flow.pages.len() as i32;
    let page_ids: Vec<Ref> = (0..count).map(|i| Ref::new(first_page + 2 * i)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(count);
    let title = format!("Certificate of acceptance, event {}", e.event_id);
    pdf.document_info(info)
        .title(TextStr(&title))
        .creator(TextStr("clicktermd"))
        .producer(TextStr(concat!("clicktermd ", env!("CARGO_PKG_VERSION"))));
    for (_, id, base) in &fonts {
        pdf.type1_font(*id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (i, lines) in flow.pages.iter().enumerate() {
        let page_id = page_ids[i];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        page.parent(tree);
        page.contents(content_id);
        {
            let mut resources = page.resources();
            let mut f = resources.fonts();
            for (font, id, _) in &fonts {
                f.pair(font.resource(), *id);
            }
        }
        page.finish();
        let mut content = Content::new();
        for l in lines {
            content.begin_text();
            content.set_font(l.font.resource(), l.size);
            content.next_line(l.x, l.y);
            content.show(Str(&win_ansi(&l.text)));
            content.end_text();
        }
        // The footer: when it was generated, which event, which page.
        let footer = format!(
            "Generated {} by clicktermd - event {} - page {} of {}",
            now.to_rfc3339(),
            e.event_id,
            i + 1,
            count
        );
        content.set_stroke_rgb(0.7, 0.7, 0.7);
        content.set_line_width(0.5);
        content.move_to(MARGIN, MARGIN + 12.0);
        content.line_to(PAGE_W - MARGIN, MARGIN + 12.0);
        content.stroke();
        content.begin_text();
        content.set_font(Font::Regular.resource(), 7.5);
        content.next_line(MARGIN, MARGIN);
        content.show(Str(&win_ansi(&footer)));
        content.end_text();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_reads_as_text_and_long_words_wrap() {
        assert_eq!(
            html_to_text(
                "<h1>Terms</h1><p>Hello &lt;Ann&gt; &amp; co&#39;s &#x263A;.</p><ul><li>one</li><li>two</li></ul>"
            ),
            "Terms\nHello <Ann> & co's \u{263a}.\n• one\n• two"
        );
        let lines = wrap(Font::Mono, 10.0, 100.0, &"a".repeat(40));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().all(|l| Font::Mono.width(l, 10.0) <= 100.0));
        assert_eq!(wrap(Font::Regular, 10.0, 1000.0, "a b\nc"), ["a b", "c"]);
        assert_eq!(win_ansi("é€✓"), [0xe9, 0x80, b'?']);
    }
}
