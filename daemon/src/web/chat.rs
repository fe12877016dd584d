//! The chat WebSocket, `GET /api/chat` (docs/HTTP.md "Chat"): JSON text frames both ways,
//! bridged to the same hub as the framed protocol's chat requests through
//! [`ChatState`] — one connection on the bus per socket, with the chat's own throttle,
//! history, presence and delivery markers, so browser and `xfer chat` users talk live.
//! Frames are bounded in size ([`MAX_FRAME`]) and in rate (a token bucket per socket on
//! top of the chat's), and the socket closes on a kick or the shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use xfer_proto::{
    ChannelName, ChatEvent, ChatMessage, ErrorCode, MAX_HISTORY, MessageBody, Presence,
    PresenceState, Response as Reply, Target,
};

use super::error::code_name;
use super::{Authed, WebState};
use crate::chat::{ChatError, TokenBucket};
use crate::session::chat::ChatState;
use crate::state::ServerState;

/// Largest frame a page may send (a chat line is far smaller).
pub const MAX_FRAME: usize = 64 * 1024;
/// Frames per second a socket may send, and the burst, before it is told to slow down.
const FRAMES_PER_SEC: u32 = 20;
const FRAME_BURST: u32 = 60;
/// Messages replayed on a join, and the default page of `history`.
const HISTORY_PAGE: u32 = 50;
/// Keeps idle sockets (and the NATs between) alive; browsers answer pings themselves.
const PING_EVERY: Duration = Duration::from_secs(30);

/// What the page sends.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Join {
        channel: String,
    },
    Part {
        channel: String,
    },
    Say {
        to: String,
        text: String,
    },
    History {
        to: String,
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Who {
        #[serde(default)]
        channel: Option<String>,
    },
    Channels,
    /// The last message read in a conversation: the user's read position, kept on the
    /// server (the same one `xfer chat` moves), so it follows them between machines.
    Read {
        to: String,
        id: u64,
    },
    /// Unread counts and mentions since the read positions.
    Catchup,
    Away {
        away: bool,
    },
}

/// `GET /api/chat`: the upgrade (the CSRF token comes as `?csrf=`, checked by [`Authed`]).
pub async fn upgrade(
    authed: Authed,
    State(web): State<WebState>,
    ws: WebSocketUpgrade,
) -> Response {
    let stop = authed.conn.stop_token();
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            // The socket holds the request's connection context: it stays counted and
            // kickable while open.
            let _authed = authed.clone();
            run(socket, web.server, authed.user, stop).await;
        })
}

async fn run(mut socket: WebSocket, state: Arc<ServerState>, me: String, stop: CancellationToken) {
    let mut chat = ChatState::new(state.clone());
    let idle = Duration::from_secs(state.config().limits.idle_timeout_secs);
    if let Err(e) = chat.chat_open(&me, None).await {
        let _ = send(&mut socket, vec![error_json(&e)], idle, &stop).await;
        return;
    }
    let mut out = vec![json!({"type": "hello", "user": me, "channels": []})];
    let pending = chat.take_pending();
    out.extend(pending.iter().map(|e| event_json(e, &me)));
    if send(&mut socket, out, idle, &stop).await.is_err() {
        return;
    }
    chat.written(&pending, &me);
    let mut bucket = TokenBucket::new(FRAMES_PER_SEC, FRAME_BURST, Instant::now());
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let written = tokio::select! {
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let e = error_code(ErrorCode::BadRequest, "send JSON text frames");
                        if send(&mut socket, vec![e], idle, &stop).await.is_err() { break; }
                        continue;
                    }
                    _ => break,
                };
                let mut out = if bucket.take(Instant::now()) {
                    request(&mut chat, &me, text.as_str()).await
                } else {
                    vec![error_code(ErrorCode::RateLimited, "too many frames; slow down")]
                };
                let pending = chat.take_pending();
                out.extend(pending.iter().map(|e| event_json(e, &me)));
                send(&mut socket, out, idle, &stop).await.map(|()| pending)
            }
            incoming = chat.next() => {
                let events = chat.collect(incoming, &me);
                let out = events.iter().map(|e| event_json(e, &me)).collect();
                send(&mut socket, out, idle, &stop).await.map(|()| events)
            }
            _ = ping.tick() => write(&mut socket, Message::Ping(Default::default()), idle, &stop)
                .await.map(|()| Vec::new()),
            () = stop.cancelled() => break,
        };
        match written {
            Ok(events) => chat.written(&events, &me),
            Err(()) => break,
        }
    }
    chat.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
}

/// Writes frames, giving up on a page that does not read for the idle time, and at
/// once on a kick or the shutdown (a page that stops reading cannot hold the socket).
async fn send(
    socket: &mut WebSocket,
    frames: Vec<Value>,
    idle: Duration,
    stop: &CancellationToken,
) -> Result<(), ()> {
    for frame in frames {
        write(socket, Message::Text(frame.to_string().into()), idle, stop).await?;
    }
    Ok(())
}

async fn write(
    socket: &mut WebSocket,
    message: Message,
    idle: Duration,
    stop: &CancellationToken,
) -> Result<(), ()> {
    tokio::select! {
        r = tokio::time::timeout(idle, socket.send(message)) => match r {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        },
        () = stop.cancelled() => Err(()),
    }
}

/// One request from the page, answered by frames for it.
async fn request(chat: &mut ChatState, me: &str, text: &str) -> Vec<Value> {
    let op: Op = match serde_json::from_str(text) {
        Ok(op) => op,
        Err(e) => {
            return vec![error_code(
                ErrorCode::BadRequest,
                &format!("bad chat request: {e}"),
            )];
        }
    };
    match answer(chat, me, op).await {
        Ok(out) => out,
        Err(refusal) => vec![refusal],
    }
}

/// An error frame for the page.
type Refusal = Value;

fn c<T>(r: Result<T, ChatError>) -> Result<T, Refusal> {
    r.map_err(|e| error_json(&e))
}

async fn answer(chat: &mut ChatState, me: &str, op: Op) -> Result<Vec<Value>, Refusal> {
    Ok(match op {
        Op::Join { channel } => {
            let name = channel_name(&channel)?;
            match c(chat.join(&name, HISTORY_PAGE, None).await)? {
                Reply::Joined {
                    channel,
                    members,
                    history,
                } => vec![
                    json!({"type": "joined", "channel": channel.to_string(), "user": me,
                           "members": members.iter().map(presence_json).collect::<Vec<_>>()}),
                    history_json(&format!("{channel}"), &history, me),
                ],
                _ => Vec::new(),
            }
        }
        Op::Part { channel } => {
            let name = channel_name(&channel)?;
            c(chat.part(&name))?;
            vec![json!({"type": "parted", "channel": name.to_string(), "user": me})]
        }
        Op::Say { to, text } => {
            let target = target(&to)?;
            match c(chat.say(me, &target, text.clone()).await)? {
                // The hub does not echo a message to the connection that sent it.
                Reply::Said { id, time_unix_ms } => vec![json!({"type": "message", "id": id,
                    "time": time_unix_ms, "from": me, "to": target_str(&target), "text": text})],
                _ => Vec::new(),
            }
        }
        Op::History { to, before, limit } => {
            let target = target(&to)?;
            let limit = limit.unwrap_or(HISTORY_PAGE).min(MAX_HISTORY);
            match c(chat.chat_history(me, &target, limit, before).await)? {
                Reply::History { messages, .. } => {
                    vec![history_json(&target_str(&target), &messages, me)]
                }
                _ => Vec::new(),
            }
        }
        Op::Who { channel } => {
            let name = channel.as_deref().map(channel_name).transpose()?;
            match c(chat.who(name.as_ref()))? {
                Reply::Who { users } => vec![json!({"type": "who", "channel": channel,
                    "users": users.iter().map(presence_json).collect::<Vec<_>>()})],
                _ => Vec::new(),
            }
        }
        Op::Channels => match chat.channels() {
            Reply::Channels { channels } => vec![json!({"type": "channels", "channels":
                channels.iter().map(|c| json!({"name": c.name, "members": c.members})).collect::<Vec<_>>()})],
            _ => Vec::new(),
        },
        Op::Read { to, id } => {
            c(chat.mark_read(me, &target(&to)?, id).await)?;
            Vec::new()
        }
        Op::Catchup => match c(chat.catchup(me).await)? {
            Reply::Catchup(catchup) => {
                let conversations: Vec<Value> = catchup
                    .conversations
                    .iter()
                    .map(|u| {
                        json!({"to": target_str(&u.target), "read": u.read, "unread": u.unread,
                               "mentions": u.mentions, "last_id": u.last_id})
                    })
                    .collect();
                vec![json!({"type": "catchup", "conversations": conversations})]
            }
            _ => Vec::new(),
        },
        Op::Away { away } => {
            c(chat.set_away(away))?;
            Vec::new()
        }
    })
}

fn channel_name(s: &str) -> Result<ChannelName, Refusal> {
    match target(s)? {
        Target::Channel(c) => Ok(c),
        Target::User(_) => Err(error_code(
            ErrorCode::BadRequest,
            &format!("{s} is not a #channel"),
        )),
    }
}

/// `#lab` is a channel; anything else a user (with or without `@`).
fn target(s: &str) -> Result<Target, Refusal> {
    let typed = if s.starts_with('#') || s.starts_with('@') {
        s.to_owned()
    } else {
        format!("@{s}")
    };
    Target::parse(&typed).map_err(|e| error_code(ErrorCode::BadRequest, &format!("{s}: {e}")))
}

/// How the page names a conversation: `#lab`, or the bare user name.
fn target_str(t: &Target) -> String {
    match t {
        Target::Channel(c) => c.to_string(),
        Target::User(u) => u.to_string(),
    }
}

fn history_json(to: &str, messages: &[ChatMessage], me: &str) -> Value {
    let messages: Vec<Value> = messages.iter().map(|m| message_json(m, me)).collect();
    json!({"type": "history", "to": to, "messages": messages})
}

fn message_json(m: &ChatMessage, _me: &str) -> Value {
    let to = target_str(&m.target);
    match &m.body {
        MessageBody::Text(text) => json!({"type": "message", "id": m.id, "time": m.time_unix_ms,
            "from": m.from, "to": to, "text": text}),
        MessageBody::File { path, size, digest } => json!({"type": "file", "id": m.id,
            "time": m.time_unix_ms, "from": m.from, "to": to, "path": path, "size": size,
            "blake3": digest.to_string()}),
    }
}

fn presence_json(p: &Presence) -> Value {
    json!({"user": p.user, "state": state_str(p.state)})
}

fn state_str(s: PresenceState) -> &'static str {
    match s {
        PresenceState::Online => "online",
        PresenceState::Away => "away",
        PresenceState::Offline => "offline",
    }
}

fn event_json(e: &ChatEvent, me: &str) -> Value {
    match e {
        ChatEvent::Message(m) => message_json(m, me),
        ChatEvent::Joined { channel, user } => {
            json!({"type": "joined", "channel": channel, "user": user})
        }
        ChatEvent::Parted { channel, user } => {
            json!({"type": "parted", "channel": channel, "user": user})
        }
        ChatEvent::Presence(p) => {
            json!({"type": "presence", "user": p.user, "state": state_str(p.state)})
        }
        ChatEvent::Missed { target, count } => {
            json!({"type": "missed", "to": target_str(target), "count": count})
        }
    }
}

fn error_json(e: &ChatError) -> Value {
    error_code(e.code(), &e.peer_message())
}

fn error_code(code: ErrorCode, message: &str) -> Value {
    json!({"type": "error", "code": code_name(code), "message": message})
}
