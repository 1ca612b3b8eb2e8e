//! DNs: parsing, escaping, comparison (RFC 4514).

use ldap3::dn_escape;

/// The RDNs of a DN, split on unescaped commas, each trimmed.
pub fn split_dn(dn: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    let mut quoted = false;
    for c in dn.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                current.push(c);
                quoted = !quoted;
            }
            ',' | ';' if !quoted => {
                parts.push(current.trim().to_string());
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

/// An RDN value without its RFC 4514 escapes (`\,` and `\2c` alike).
pub fn unescape_dn_value(value: &str) -> String {
    // Surrounding spaces are not part of the value, but an escaped one (`\ `) is.
    let mut value = value.trim_start();
    while value.ends_with(' ') && !value[..value.len() - 1].ends_with('\\') {
        value = &value[..value.len() - 1];
    }
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether two RDNs are the same, ignoring case and spaces around `=`.
pub fn rdn_eq(a: &str, b: &str) -> bool {
    let norm = |r: &str| match r.split_once('=') {
        Some((n, v)) => (n.trim().to_ascii_lowercase(), unescape_dn_value(v).to_lowercase()),
        None => (r.trim().to_ascii_lowercase(), String::new()),
    };
    norm(a) == norm(b)
}

/// Whether two DNs name the same entry (attribute names and values compared without case).
pub fn dn_eq(a: &str, b: &str) -> bool {
    let (a, b) = (split_dn(a), split_dn(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| rdn_eq(x, y))
}

/// The DN of a new entry whose mapping gave none: `<rdn_attribute>=<value>,<base>` (the base being
/// the partition's search base: the container, else the partition).
pub fn default_dn(rdn_attribute: &str, rdn_value: &str, base: &str) -> String {
    format!("{rdn_attribute}={},{base}", dn_escape(rdn_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_split_on_unescaped_commas_only() {
        assert_eq!(
            split_dn(r"uid=a\,b,ou=People, dc=example,dc=com"),
            [r"uid=a\,b", "ou=People", "dc=example", "dc=com"]
        );
        assert_eq!(split_dn(r#"cn="x,y",dc=com"#), [r#"cn="x,y""#, "dc=com"]);
        assert_eq!(unescape_dn_value(r"a\,b\2Cc\\d\ "), r"a,b,c\d ");
        assert!(dn_eq("UID=A,ou=people,DC=Example,dc=com", "uid=a, ou=People,dc=example,dc=com"));
        assert!(!dn_eq("uid=a,dc=com", "uid=b,dc=com"));
    }
}
