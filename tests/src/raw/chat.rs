//! Chat over a [`RawConn`]: events in arrival order, and the requests tests make most
//! (open, join, say, history), each asserting that the server accepted.

use xfer_proto::{ChatEvent, ChatMessage, MessageBody, Request, Response};

use tokio::io::{AsyncRead, AsyncWrite};

use super::RawConn;

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// The next chat event: a kept one first, else the next off the wire; panics on
    /// anything that is not an event.
    pub async fn event(&mut self) -> ChatEvent {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        match self.frame().await {
            xfer_proto::Frame::Message(Response::Event(e)) => *e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next message event, skipping presence, joins and parts; panics on a
    /// `Missed` (a test that expects losses reads [`RawConn::event`] instead).
    pub async fn message(&mut self) -> ChatMessage {
        loop {
            match self.event().await {
                ChatEvent::Message(m) => return m,
                ChatEvent::Missed { target, count } => {
                    panic!("unexpected: missed {count} of {target}")
                }
                _ => {}
            }
        }
    }

    /// Every event that arrives before the answer to a ping (all the server had queued
    /// for this connection at that moment).
    pub async fn events_so_far(&mut self) -> Vec<ChatEvent> {
        assert_eq!(self.call(Request::Ping).await, Response::Pong);
        self.events.drain(..).collect()
    }

    /// `ChatOpen`, asserting it is accepted.
    pub async fn open(&mut self, after: Option<u64>) {
        let r = self.call(Request::ChatOpen { after }).await;
        assert!(matches!(r, Response::ChatOpened { .. }), "{r:?}");
    }

    /// Joins `channel`, asserting it is accepted; the replayed history.
    pub async fn join(&mut self, channel: &str, history: u32) -> Vec<ChatMessage> {
        let req = Request::Join {
            channel: channel.parse().expect("a valid channel name"),
            history,
            after: None,
        };
        match self.call(req).await {
            Response::Joined { history, .. } => history,
            other => panic!("join refused: {other:?}"),
        }
    }

    /// Says `text` to `target` (`#channel` or `@user`), asserting it is accepted; the
    /// message id.
    pub async fn say(&mut self, target: &str, text: &str) -> u64 {
        match self.try_say(target, text).await {
            Response::Said { id, .. } => id,
            other => panic!("say refused: {other:?}"),
        }
    }

    /// Says `text` to `target`; whatever the server answers.
    pub async fn try_say(&mut self, target: &str, text: &str) -> Response {
        self.call(Request::Say {
            target: target.parse().expect("a valid target"),
            text: text.into(),
        })
        .await
    }

    /// The newest 200 messages of `target`, asserting the server answers with them.
    pub async fn history(&mut self, target: &str) -> Vec<ChatMessage> {
        let req = Request::History {
            target: target.parse().expect("a valid target"),
            count: 200,
            before: None,
        };
        match self.call(req).await {
            Response::History { messages, .. } => messages,
            other => panic!("history refused: {other:?}"),
        }
    }
}

/// The text of a message, or the path of a file notice.
pub fn text_of(m: &ChatMessage) -> &str {
    match &m.body {
        MessageBody::Text(t) => t,
        MessageBody::File { path, .. } => path,
    }
}
