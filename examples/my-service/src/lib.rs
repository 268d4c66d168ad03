//! A user's service: it turns editor contexts into chat-completion requests (with the demo's
//! old serializer standing in for real code). Its `tests/replay.rs` shows how a crate tests
//! its in-process build against recorded production answers with `harness`.

/// The service's one entry point: an editor context (JSON) in, a request (JSON) out.
pub fn handle(context: &[u8]) -> Result<Vec<u8>, String> {
    demo::serializer::serialize_json(context, demo::serializer::Version::V1)
}
