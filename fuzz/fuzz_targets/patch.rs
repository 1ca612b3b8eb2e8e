//! The PATCH engine: any JSON body either applies or is refused with a SCIM 400, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::scim::patch;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let mut resource = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bjensen", "emails": [{"value": "a@x", "type": "work"}], "members": [{"value": "u1"}]
    });
    if let Err(error) = patch::apply(&mut resource, &body) {
        assert_eq!(error.status.as_u16(), 400);
    }
});
