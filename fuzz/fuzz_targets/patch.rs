//! The PATCH engine: any JSON body either applies or is refused with a SCIM 400, never panics;
//! the patched resource, once checked against its schemas, is accepted or refused with a 400.
//! The first byte nests the body's operations that many levels deep in arrays and objects, past
//! serde_json's recursion limit as well as within it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::scim::patch;
use supervisor::scim::schema::{ResourceSchemas, UnknownAttributes};

fuzz_target!(|data: &[u8]| {
    let Some((&depth, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let depth = usize::from(depth);
    // `{"value": [[[ ... text ... ]]]}`-style nesting around whatever the fuzzer wrote.
    let deep = format!("{}{text}{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
    let schemas = ResourceSchemas::of("User", &[], UnknownAttributes::Refuse);
    for text in [text, deep.as_str()] {
        let Ok(body) = serde_json::from_str::<serde_json::Value>(text) else { continue };
        let mut resource = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bjensen", "emails": [{"value": "a@x", "type": "work"}]
        });
        match patch::apply(&mut resource, &body, &schemas) {
            Ok(()) => {
                if let Err(error) = schemas.conform(&mut resource) {
                    assert_eq!(error.status.as_u16(), 400);
                }
            }
            Err(error) => assert_eq!(error.status.as_u16(), 400),
        }
    }
});
