//! Chat requests of a session (placeholder until the hub lands).

use xfer_proto::{ErrorCode, Request, Response};

use super::Session;

impl Session {
    /// Requests 15–22.
    pub(super) async fn handle_chat(&mut self, _request: Request) -> Response {
        Response::error(ErrorCode::BadRequest, "chat is not available yet")
    }
}
