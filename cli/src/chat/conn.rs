//! A chat connection: typed chat requests over a [`Client`], with the pushed
//! [`ChatEvent`]s that arrive between answers routed into a queue instead of being
//! taken for the answer.
//!
//! The server answers every request exactly once, in order, and may push `Event`
//! frames at any moment after `ChatOpen`. [`ChatConn::request`] therefore reads frames
//! until the first one that is not an event and queues the events it passes;
//! [`ChatConn::next_event`] hands out queued events first, then waits on the socket.
//! This module does not decide what to show or when to reconnect.

use std::collections::VecDeque;

use anyhow::Result;
use xfer_proto::{
    ChannelInfo, ChannelName, ChatEvent, ChatMessage, MAX_HISTORY, Presence, Request, Response,
    Target,
};

use crate::client::Client;
use crate::error::{NetworkError, ProtocolError};

/// Events kept while waiting for one answer. A server pushing more than this before
/// answering is treated as a lost connection: the session reconnects and replays what
/// it had not shown yet, so nothing is lost and memory stays bounded.
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// An authenticated connection used for chat requests.
pub struct ChatConn {
    client: Client,
    events: VecDeque<ChatEvent>,
}

impl ChatConn {
    /// Wraps an authenticated client.
    pub fn new(client: Client) -> Self {
        ChatConn {
            client,
            events: VecDeque::new(),
        }
    }

    /// Sends `req` and returns its answer; events that arrive first are queued for
    /// [`ChatConn::next_event`]. `Response::Error` becomes a `RemoteError`.
    ///
    /// # Errors
    /// As [`Client::request`], and a [`NetworkError`] when more than
    /// [`MAX_QUEUED_EVENTS`] events arrive before the answer.
    pub async fn request(&mut self, req: Request) -> Result<Response> {
        self.client.feed_request(req).await?;
        self.client.flush().await?;
        loop {
            match self.client.recv_response().await? {
                Response::Event(event) => {
                    if self.events.len() >= MAX_QUEUED_EVENTS {
                        return Err(NetworkError::new(format!(
                            "{} sent more than {MAX_QUEUED_EVENTS} chat events before answering",
                            self.client.server()
                        ))
                        .into());
                    }
                    self.events.push_back(*event);
                }
                other => return Ok(other),
            }
        }
    }

    /// The next pushed event: a queued one, or the next to arrive (however long that
    /// takes).
    ///
    /// # Errors
    /// [`NetworkError`] when the connection is lost; [`ProtocolError`] for an answer
    /// nothing asked for.
    ///
    /// # Cancel safety
    /// Cancel-safe: taking a queued event does not wait, and a partly received frame
    /// stays in the connection's buffer.
    pub async fn next_event(&mut self) -> Result<ChatEvent> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        match self.client.recv_message().await? {
            Response::Event(event) => Ok(*event),
            _ => Err(ProtocolError(format!(
                "{} sent an answer to no request",
                self.client.server()
            ))
            .into()),
        }
    }

    /// Whether events are queued (so [`ChatConn::next_event`] will not wait).
    pub fn has_queued_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Makes this a chat connection; returns the account name and the largest message
    /// id so far. Stored direct messages and notices follow as events.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn open(&mut self, after: Option<u64>) -> Result<(String, u64)> {
        match self.request(Request::ChatOpen { after }).await? {
            Response::ChatOpened { user, last_id } => Ok((user, last_id)),
            _ => Err(self.unexpected("a chat confirmation")),
        }
    }

    /// Joins `channel`, replaying its last `history` messages or those after `after`;
    /// returns the channel, the members and the replayed messages.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn join(
        &mut self,
        channel: &ChannelName,
        history: u32,
        after: Option<u64>,
    ) -> Result<(ChannelName, Vec<Presence>, Vec<ChatMessage>)> {
        let req = Request::Join {
            channel: channel.clone(),
            history,
            after,
        };
        match self.request(req).await? {
            Response::Joined {
                channel,
                members,
                history,
            } => Ok((channel, members, history)),
            _ => Err(self.unexpected("a join confirmation")),
        }
    }

    /// Leaves `channel`.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn part(&mut self, channel: &ChannelName) -> Result<()> {
        let req = Request::Part {
            channel: channel.clone(),
        };
        match self.request(req).await? {
            Response::Ok => Ok(()),
            _ => Err(self.unexpected("ok")),
        }
    }

    /// Says `text` to `target`; returns the message id and the server's time (ms since
    /// the epoch).
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn say(&mut self, target: &Target, text: &str) -> Result<(u64, u64)> {
        let req = Request::Say {
            target: target.clone(),
            text: text.to_string(),
        };
        match self.request(req).await? {
            Response::Said { id, time_unix_ms } => Ok((id, time_unix_ms)),
            _ => Err(self.unexpected("a message confirmation")),
        }
    }

    /// Up to `count` stored messages of `target` older than `before`, oldest first.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn history(
        &mut self,
        target: &Target,
        count: u32,
        before: Option<u64>,
    ) -> Result<Vec<ChatMessage>> {
        let req = Request::History {
            target: target.clone(),
            count,
            before,
        };
        // Reads share the connection's rate limit with messages; a catch-up after a
        // reconnect may page through several conversations at once, so a read that
        // is refused for going too fast waits for the bucket to refill and retries.
        let mut retries = 0;
        let answer = loop {
            match self.request(req.clone()).await {
                Err(e) if retries < HISTORY_RETRIES && is_rate_limited(&e) => {
                    retries += 1;
                    tokio::time::sleep(HISTORY_RETRY_PAUSE).await;
                }
                other => break other?,
            }
        };
        match answer {
            Response::History { messages, .. } => Ok(messages),
            _ => Err(self.unexpected("history")),
        }
    }

    /// The last `count` stored messages of `target`, oldest first, paging back through
    /// answers of at most [`MAX_HISTORY`] messages.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn history_last(&mut self, target: &Target, count: u32) -> Result<Vec<ChatMessage>> {
        let mut pages: Vec<Vec<ChatMessage>> = Vec::new();
        let mut have = 0u32;
        let mut before = None;
        while have < count {
            let want = (count - have).min(MAX_HISTORY);
            let page = self.history(target, want, before).await?;
            let Some(oldest) = page.first().map(|m| m.id) else {
                break;
            };
            let got = page.len().min(want as usize);
            have += got as u32;
            // Keep the newest `want` of a page that is too long.
            pages.push(page.into_iter().rev().take(got).rev().collect());
            if (got as u32) < want {
                break;
            }
            before = Some(oldest);
        }
        Ok(pages.into_iter().rev().flatten().collect())
    }

    /// Members of `channel`, or everyone online.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn who(&mut self, channel: Option<&ChannelName>) -> Result<Vec<Presence>> {
        let req = Request::Who {
            channel: channel.cloned(),
        };
        match self.request(req).await? {
            Response::Who { users } => Ok(users),
            _ => Err(self.unexpected("a member list")),
        }
    }

    /// Channels that have members now.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn channels(&mut self) -> Result<Vec<ChannelInfo>> {
        match self.request(Request::Channels).await? {
            Response::Channels { channels } => Ok(channels),
            _ => Err(self.unexpected("a channel list")),
        }
    }

    /// Marks this user away or back.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn set_away(&mut self, away: bool) -> Result<()> {
        match self.request(Request::SetAway { away }).await? {
            Response::Ok => Ok(()),
            _ => Err(self.unexpected("ok")),
        }
    }

    /// Records on the server that this user read `target` up to `id`.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn mark_read(&mut self, target: &Target, id: u64) -> Result<()> {
        let req = Request::MarkRead {
            target: target.clone(),
            id,
        };
        match self.request(req).await? {
            Response::Ok => Ok(()),
            _ => Err(self.unexpected("ok")),
        }
    }

    /// Unread counts, mentions and new files since this user's read positions.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn catchup(&mut self) -> Result<xfer_proto::Catchup> {
        match self.request(Request::Catchup).await? {
            Response::Catchup(c) => Ok(c),
            _ => Err(self.unexpected("a catch-up")),
        }
    }

    /// Keep-alive: the server closes connections idle for longer than its idle timeout,
    /// and a missing answer reveals a dead connection.
    ///
    /// # Errors
    /// As [`ChatConn::request`].
    pub async fn ping(&mut self) -> Result<()> {
        match self.request(Request::Ping).await? {
            Response::Pong => Ok(()),
            _ => Err(self.unexpected("pong")),
        }
    }

    fn unexpected(&self, wanted: &str) -> anyhow::Error {
        ProtocolError(format!(
            "{} sent an unexpected reply instead of {wanted}",
            self.client.server()
        ))
        .into()
    }
}

/// How often a rate-limited history read is retried, and how long it waits each time
/// (the server refills its bucket at several requests a second).
const HISTORY_RETRIES: u32 = 20;
const HISTORY_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

fn is_rate_limited(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::error::RemoteError>()
        .is_some_and(|r| r.code == xfer_proto::ErrorCode::RateLimited)
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_util::codec::Framed;
    use xfer_proto::{ErrorCode, Frame, MessageBody, ServerCodec};

    use super::*;
    use crate::target::ServerAddr;

    fn general() -> Target {
        Target::parse("#general").unwrap()
    }

    fn msg(id: u64, text: &str) -> ChatEvent {
        ChatEvent::Message(ChatMessage {
            id,
            time_unix_ms: 0,
            from: "bob".into(),
            target: general(),
            body: MessageBody::Text(text.into()),
        })
    }

    /// A client over an in-memory pipe, and the server end.
    fn pair() -> (ChatConn, Framed<tokio::io::DuplexStream, ServerCodec>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let addr = ServerAddr::parse("test:1").unwrap();
        let conn = ChatConn::new(Client::over_stream(a, addr));
        (
            conn,
            Framed::new(b, ServerCodec::new(xfer_proto::MAX_FRAME_LEN)),
        )
    }

    #[tokio::test]
    async fn events_before_an_answer_are_queued_not_taken_for_it() {
        let (mut conn, mut server) = pair();
        let srv = tokio::spawn(async move {
            let Some(Ok(Frame::Message(Request::Say { target, text }))) = server.next().await
            else {
                panic!("expected Say")
            };
            assert_eq!((target, text.as_str()), (general(), "hi"));
            for (id, t) in [(1, "one"), (2, "two")] {
                server
                    .send(Frame::Message(Response::Event(Box::new(msg(id, t)))))
                    .await
                    .unwrap();
            }
            let said = Response::Said {
                id: 3,
                time_unix_ms: 9,
            };
            server.send(Frame::Message(said)).await.unwrap();
            server
                .send(Frame::Message(Response::Event(Box::new(msg(4, "four")))))
                .await
                .unwrap();
            server
        });
        assert_eq!(conn.say(&general(), "hi").await.unwrap(), (3, 9));
        assert!(conn.has_queued_events());
        assert_eq!(conn.next_event().await.unwrap(), msg(1, "one"));
        assert_eq!(conn.next_event().await.unwrap(), msg(2, "two"));
        assert!(!conn.has_queued_events());
        assert_eq!(conn.next_event().await.unwrap(), msg(4, "four"));
        drop(srv.await.unwrap());
        let err = conn.next_event().await.unwrap_err();
        assert_eq!(crate::exit_code(&err), 8, "{err:#}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_history_read_waits_and_retries() {
        let (mut conn, mut server) = pair();
        let srv = tokio::spawn(async move {
            for _ in 0..2 {
                let Some(Ok(Frame::Message(Request::History { .. }))) = server.next().await else {
                    panic!("expected History")
                };
                let refused = Response::error(ErrorCode::RateLimited, "too many chat requests");
                server.send(Frame::Message(refused)).await.unwrap();
            }
            let Some(Ok(Frame::Message(Request::History { target, .. }))) = server.next().await
            else {
                panic!("expected History")
            };
            let page = Response::History {
                target,
                messages: Vec::new(),
            };
            server.send(Frame::Message(page)).await.unwrap();
            server
        });
        assert_eq!(conn.history(&general(), 5, None).await.unwrap(), Vec::new());
        drop(srv.await.unwrap());
    }

    #[tokio::test]
    async fn an_unasked_answer_is_a_protocol_error() {
        let (mut conn, mut server) = pair();
        server.send(Frame::Message(Response::Pong)).await.unwrap();
        let err = conn.next_event().await.unwrap_err();
        assert_eq!(crate::exit_code(&err), 9, "{err:#}");
    }

    #[tokio::test]
    async fn a_flood_of_events_before_an_answer_is_bounded() {
        let (mut conn, mut server) = pair();
        let srv = tokio::spawn(async move {
            let _ = server.next().await;
            for id in 0..=MAX_QUEUED_EVENTS as u64 {
                if server
                    .send(Frame::Message(Response::Event(Box::new(msg(id, "x")))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = server.send(Frame::Message(Response::Pong)).await;
        });
        let err = conn.ping().await.unwrap_err();
        assert_eq!(crate::exit_code(&err), 8, "{err:#}");
        drop(conn);
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn long_history_is_read_in_pages_backwards() {
        let (mut conn, mut server) = pair();
        tokio::spawn(async move {
            // 450 stored messages, ids 1..=450.
            while let Some(Ok(Frame::Message(Request::History { count, before, .. }))) =
                server.next().await
            {
                let end = before.unwrap_or(451);
                let start = end.saturating_sub(u64::from(count)).max(1);
                let messages = (start..end)
                    .map(|id| match msg(id, "m") {
                        ChatEvent::Message(m) => m,
                        _ => unreachable!(),
                    })
                    .collect();
                let h = Response::History {
                    target: general(),
                    messages,
                };
                server.send(Frame::Message(h)).await.unwrap();
            }
        });
        let ids = |v: Vec<ChatMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(conn.history_last(&general(), 3).await.unwrap()),
            [448, 449, 450]
        );
        let all = ids(conn.history_last(&general(), 1000).await.unwrap());
        assert_eq!(all, (1..=450).collect::<Vec<_>>());
        let some = ids(conn.history_last(&general(), 250).await.unwrap());
        assert_eq!(some, (201..=450).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn errors_answer_the_request() {
        let (mut conn, mut server) = pair();
        tokio::spawn(async move {
            let _ = server.next().await;
            let e = Response::Error {
                code: xfer_proto::ErrorCode::NotFound,
                message: "no user zed".into(),
            };
            server.send(Frame::Message(e)).await.unwrap();
            server
        });
        let err = conn
            .say(&Target::parse("@zed").unwrap(), "hi")
            .await
            .unwrap_err();
        assert_eq!(crate::exit_code(&err), 5, "{err:#}");
        assert!(format!("{err:#}").contains("no user zed"));
    }
}
