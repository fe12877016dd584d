//! Files handed to people: `SendBegin` and what happens when such an upload commits.
//!
//! A send is an ordinary upload (same admission, chunks, resume and verification as
//! `PutBegin`) into `inbox/<sender>/<name>` in the recipient's namespace, so their
//! quota and type policy apply, and re-running it continues the same partial. Nobody
//! else can list or read that namespace: the inbox is deliver-only for others. On
//! commit the recipient gets a `File` message, stored in the sender's and recipient's
//! direct conversation: live if they are connected, otherwise at their next `ChatOpen`.

use xfer_proto::{
    ErrorCode, MessageBody, Response, Target, TargetError, UserName, valid_user_name,
};

use super::files::Files;
use crate::audit;
use crate::chat::ConnId;
use crate::connections::Registration;
use crate::storage::RelPath;

/// The directory of a user's home that others deliver into.
pub const INBOX: &str = "inbox";

impl Files {
    /// Starts or resumes a send of `name` to `to`.
    #[allow(clippy::too_many_arguments)] // the request's fields plus the session's
    pub(super) async fn send_begin(
        &mut self,
        registration: &Registration,
        from: &str,
        to: String,
        name: &str,
        size: u64,
        force: bool,
        head: bytes::Bytes,
    ) -> Result<Response, Response> {
        if !valid_user_name(&to) {
            return Err(Response::error(
                ErrorCode::BadRequest,
                TargetError::BadUser.to_string(),
            ));
        }
        if self.state().passwords.find(&to).await.is_none() {
            return Err(Response::error(
                ErrorCode::NotFound,
                format!("no user {to}"),
            ));
        }
        let one_component = RelPath::parse_entry(name).is_ok_and(|p| p.components().count() == 1);
        if !one_component {
            return Err(Response::error(
                ErrorCode::InvalidPath,
                format!("{name:?} is not a file name: give one path component, such as photo.png"),
            ));
        }
        let path = format!("{INBOX}/{from}/{name}");
        self.put_begin(registration, from, &path, size, force, head, Some(to))
            .await
    }

    /// A send committed: audit it and tell the recipient. The file is in place whatever
    /// happens here, so a failure to store the notice is logged, not returned.
    pub(super) async fn file_sent(
        &self,
        origin: Option<ConnId>,
        to: &str,
        record: &audit::UploadRecord<'_>,
        digest: xfer_proto::Digest,
    ) {
        audit::send(record, to);
        let body = MessageBody::File {
            path: record.path.to_owned(),
            size: record.bytes,
            digest,
        };
        // `to` passed the account-name rule at `SendBegin`.
        let Ok(to_name) = UserName::new(to) else {
            tracing::error!(to, "a sent file's recipient is no user name");
            return;
        };
        let target = Target::User(to_name);
        if let Err(e) = self
            .state()
            .chat
            .post(origin, record.user, &target, body)
            .await
        {
            tracing::error!(error = %e, to, path = ?record.path, "storing the notice of a sent file failed");
        }
    }
}
