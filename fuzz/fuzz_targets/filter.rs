//! The SCIM filter parser and evaluator: any text either parses or is refused, never panics,
//! and a parsed filter evaluates (and drops) without panicking or overflowing the stack. The
//! first byte makes the input deep or long as well: it wraps the text in that many levels of
//! parentheses, `not (...)` or value filters, or repeats it in an `and`/`or` chain (the fuzzer
//! once missed the 1,500-deep filter that overflowed a runtime thread's stack).
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::paths::{Filter, ValuePath};

fn grow(shape: u8, text: &str) -> String {
    let n = usize::from(shape >> 2) * 40; // up to 2,520 levels or links
    match shape & 3 {
        0 => format!("{}{text}{}", "(".repeat(n), ")".repeat(n)),
        1 => format!("{}{text}{}", "not (".repeat(n), ")".repeat(n)),
        2 => format!("{}{text}{}", "emails[".repeat(n), "]".repeat(n)),
        _ => vec![text; n.max(1)].join(if n % 80 == 0 { " and " } else { " or " }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let resource = serde_json::json!({
        "userName": "bjensen", "name": {"givenName": "B"}, "active": true, "age": 7,
        "emails": [{"value": "a@x", "type": "work", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}
    });
    for text in [text.to_string(), grow(shape, text)] {
        if let Ok(filter) = Filter::parse(&text) {
            let _ = filter.matches(&resource);
        }
        if let Ok(path) = ValuePath::parse(&text) {
            let _ = path.resolve(&resource);
        }
    }
});
