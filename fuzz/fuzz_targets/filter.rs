//! The SCIM filter parser and evaluator: any text either parses or is refused, never panics,
//! and a parsed filter evaluates against a resource without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::scim::filter::{Filter, ValuePath};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let resource = serde_json::json!({
        "userName": "bjensen", "name": {"givenName": "B"}, "active": true, "age": 7,
        "emails": [{"value": "a@x", "type": "work", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}
    });
    if let Ok(filter) = Filter::parse(text) {
        let _ = filter.matches(&resource);
    }
    if let Ok(path) = ValuePath::parse(text) {
        let _ = path.resolve(&resource);
    }
});
