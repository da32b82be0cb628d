//! The MCP tools' argument decoding (`mcp::args::decode_for`) on arbitrary bytes, read as a
//! JSON value and handed to every tool as its `arguments`.
//!
//! Properties: no panic; a call that decodes names no property outside the tool's published
//! input schema and has every required one; one that does not decode says why (a message
//! that names the argument at fault when it blames one); an unknown tool is `None`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loop_orchestrator::mcp::args::{TOOLS, decode_for};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let arguments = match value {
        serde_json::Value::Object(map) => Some(map),
        serde_json::Value::Null => None,
        // rmcp only hands a tool an object (or nothing); other values are the transport's
        // to refuse.
        _ => return,
    };
    for tool in TOOLS {
        let decoded = decode_for(tool, arguments.clone()).expect("a known tool");
        match &decoded.result {
            Ok(()) => {
                for key in arguments.iter().flat_map(|a| a.keys()) {
                    assert!(
                        decoded.properties.contains(key),
                        "{tool}: accepted {key:?}, which its schema does not list"
                    );
                }
                for key in &decoded.required {
                    assert!(
                        arguments.as_ref().is_some_and(|a| a.contains_key(key)),
                        "{tool}: accepted without the required {key:?}"
                    );
                }
            }
            Err(message) => {
                assert!(!message.is_empty(), "{tool}: an empty error");
                if let Some((blamed, _)) = message.split_once(": ")
                    && decoded.properties.iter().any(|p| p == blamed)
                {
                    assert!(
                        arguments.as_ref().is_some_and(|a| a.contains_key(blamed)),
                        "{tool}: blames {blamed:?}, which the call did not pass: {message}"
                    );
                }
            }
        }
    }
    assert!(decode_for("no_such_tool", arguments).is_none());
});
