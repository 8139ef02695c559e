//! URL query strings: percent-encoding for the client and parsing for the server. Hand-written
//! because the control plane only needs `application/x-www-form-urlencoded` pairs and a URL
//! crate would be a whole dependency for thirty lines.

/// Percent-encodes `s` for a query component (everything but unreserved characters).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a query component: `+` is a space, `%XX` a byte. Invalid escapes are kept as
/// written. Bytes that are not UTF-8 are refused (a lossy decoding would silently turn a
/// path or a status into another one).
pub(crate) fn decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded `(key, value)` pairs of a query string (without the `?`), or an error naming
/// the pair whose decoded bytes are not UTF-8.
pub(crate) fn parse(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |_| format!("query parameter `{pair}` is not valid UTF-8 once decoded");
            Ok((decode(k).map_err(bad)?, decode(v).map_err(bad)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_decode_round_trip() {
        for s in ["/tmp/a b/c", "PENDING,RUNNING", "ü&=?#%", ""] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn decode_keeps_invalid_escapes() {
        assert_eq!(decode("100%").unwrap(), "100%");
        assert_eq!(decode("%zz1").unwrap(), "%zz1");
        assert_eq!(decode("a+b%2Fc").unwrap(), "a b/c");
    }

    #[test]
    fn invalid_utf8_is_refused_naming_the_pair() {
        assert!(decode("%FF").is_err());
        assert!(decode("%C3%BC").is_ok());
        let err = parse("limit=5&status=%C3%28").unwrap_err();
        assert!(err.contains("status=%C3%28"), "{err}");
    }

    #[test]
    fn parse_splits_pairs() {
        assert_eq!(
            parse("status=PENDING%2CRUNNING&limit=5&flag&").unwrap(),
            vec![
                ("status".to_owned(), "PENDING,RUNNING".to_owned()),
                ("limit".to_owned(), "5".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }
}
