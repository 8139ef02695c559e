//! HTML building blocks of the dashboard: escaping (every value from a run, a file or a
//! request goes through [`esc`]), the page frame, and the small formatters the pages share.

use std::fmt::Write as _;

use loop_engine::domain::{RunStatus, UnixMs};

/// `s` with the five HTML-special characters escaped, safe in text and in quoted attributes.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query value.
pub(crate) fn url(s: &str) -> String {
    crate::query::encode(s)
}

/// A whole page: the frame with navigation (when logged in), `title` and `body`.
pub(crate) fn page(title: &str, logged_in: bool, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    out.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/ui/assets/dash.css\">\
         <link rel=\"icon\" href=\"data:,\">",
    );
    let _ = write!(out, "<title>{} · loopd</title></head><body>", esc(title));
    out.push_str("<header class=\"top\"><a class=\"brand\" href=\"/\">loopd</a>");
    if logged_in {
        out.push_str(
            "<nav><a href=\"/\">Runs</a><a href=\"/ui/new\">Start a run</a>\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"logout\">Log out</button></form></nav>",
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main><script src=\"/ui/assets/dash.js\" defer></script></body></html>");
    out
}

/// The CSS class of a status badge.
pub(crate) fn status_badge(status: RunStatus) -> String {
    format!(
        "<span class=\"badge st-{s}\">{s}</span>",
        s = status.as_str()
    )
}

/// How long ago `ms` was, relative to `now` (`12s`, `5m`, `3h`, `2d`).
pub(crate) fn age(now: UnixMs, ms: UnixMs) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A duration in milliseconds, readably (`850 ms`, `12.3 s`, `4m 05s`).
pub(crate) fn duration(ms: i64) -> String {
    match ms {
        ..1000 => format!("{} ms", ms.max(0)),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// A cost in US dollars.
pub(crate) fn usd(v: f64) -> String {
    format!("${v:.2}")
}

/// An RFC 3339 timestamp (UTC, seconds) of `ms`.
pub(crate) fn time(ms: UnixMs) -> String {
    crate::api::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("plain ü"), "plain ü");
    }

    #[test]
    fn formatters_read_well() {
        assert_eq!(age(100_000, 88_000), "12s");
        assert_eq!(age(1_000_000, 700_000), "5m");
        assert_eq!(age(20_000_000, 9_000_000), "3h");
        assert_eq!(age(0, 5), "0s");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(usd(0.5), "$0.50");
    }

    #[test]
    fn the_page_frame_escapes_its_title() {
        let p = page("<x>", true, "<p>body</p>");
        assert!(p.contains("<title>&lt;x&gt; · loopd</title>"));
        assert!(p.contains("action=\"/logout\""));
        assert!(!page("t", false, "").contains("/logout"));
    }
}
