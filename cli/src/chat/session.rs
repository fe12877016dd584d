//! A chat session that outlives its connections: one loop over pushed events, typed
//! lines, a keep-alive ping and background file sends, which reconnects with backoff
//! when the connection drops and replays what it missed.
//!
//! Replay: message ids are server-wide and increase within each stream (a channel, or
//! the direct messages and notices of this user), though not across streams. The
//! session keeps, per stream, the last id received on it (see [`State`]); after a
//! reconnect it sends `ChatOpen { after }` with the direct-message stream's mark and
//! re-`Join`s each channel after that channel's mark, and drops anything it already
//! showed (by id). A `Missed` event (this connection read too slowly and the server
//! dropped messages for it rather than make the room wait, or a replay was longer than
//! one answer) is answered by paging `History` back to that conversation's mark. Showing things is the [`Ui`]'s business; carrying out
//! slash commands is in [`crate::chat::execute`].

use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use xfer_proto::{ChannelName, ChatEvent, ChatMessage, ErrorCode, MAX_HISTORY, Target};

use super::conn::ChatConn;
use super::read::ReadMarks;
use super::state::{Backoff, State};
use crate::error::{ErrorKind, RemoteError, error_kind};
use crate::home::Home;
use crate::output::escape_control;
use crate::session::open_session;

/// How often a quiet chat connection pings, well inside the server's idle timeout.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Most missed messages one catch-up fetches: a notice of more stops the walk back
/// after this many (older ones: `/history`).
pub const MAX_CATCH_UP: usize = 10 * MAX_HISTORY as usize;

/// Where a session shows things.
pub trait Ui {
    /// A message not shown before (`me` is this user).
    fn message(&mut self, msg: &ChatMessage, me: &str);
    /// A pushed event other than a message.
    fn event(&mut self, event: &ChatEvent);
    /// A line from the client: what a command did, the connection's state.
    fn info(&mut self, text: &str);
    /// Something failed; the session goes on.
    fn error(&mut self, text: &str);
    /// Lines typed go to `here` from now on (interactive mode shows its messages
    /// without their tag).
    fn talking_in(&mut self, _here: Option<&Target>) {}
    /// The session is ready for the next typed line (interactive mode shows a prompt).
    fn ready(&mut self, _state: &State, _online: bool) {}
    /// The connection was lost or is back (interactive mode redraws its prompt, even
    /// under a half-typed line).
    fn connection(&mut self, _state: &State, _online: bool) {}
    /// `/clear`: clears the screen, if there is one.
    fn clear(&mut self) {}
    /// Between the backlog already read and what is new since the user left.
    fn new_since(&mut self) {}
    /// The output went away (a closed pipe): the session should end.
    fn closed(&self) -> bool {
        false
    }
}

/// What the terminal side sends.
#[derive(Debug)]
pub enum Input {
    /// A typed line.
    Line(String),
    /// Ctrl-C, Ctrl-D or end of input: leave.
    End,
}

/// A file handed to someone in the background: the line to show when it ends.
pub type TransferResult = std::result::Result<String, String>;

/// A chat session: its state and, while connected, its connection.
pub struct Session {
    pub(crate) home: Home,
    pub(crate) conn: Option<ChatConn>,
    /// What survives reconnects.
    pub state: State,
    backoff: Backoff,
    pub(crate) transfers: JoinSet<TransferResult>,
    /// Where each conversation was read up to, as the server keeps it.
    pub(crate) read: ReadMarks,
    /// Mark what is shown as read on the server (interactive mode: a person saw it).
    pub(crate) marks_read: bool,
}

/// What woke the loop.
enum Step {
    Event(Result<ChatEvent>),
    Input(Option<Input>),
    Ping,
    Transfer(TransferResult),
}

impl Session {
    /// Connects with the saved login and opens chat; stored direct messages and file
    /// notices follow as events.
    ///
    /// # Errors
    /// As [`open_session`] and [`ChatConn::open`]: no retry on a first connection.
    pub async fn open(home: &Home) -> Result<Session> {
        let (_login, client) = open_session(home).await?;
        let mut conn = ChatConn::new(client);
        let (me, last_id) = conn.open(None).await?;
        Ok(Session::with_conn(
            home.clone(),
            conn,
            State::new(me, last_id),
        ))
    }

    /// Interactive mode: takes the read positions from the server ("new since you
    /// left" is measured from them), and from now on what is shown counts as read and
    /// is marked so on the server.
    ///
    /// # Errors
    /// A lost connection.
    pub async fn keep_read_positions(&mut self) -> Result<()> {
        self.marks_read = true;
        self.fetch_read_marks().await
    }

    /// Takes the read positions from the server (interactive mode only). A refusal
    /// leaves none (no marker); a lost connection is an error.
    async fn fetch_read_marks(&mut self) -> Result<()> {
        if !self.marks_read {
            return Ok(());
        }
        match self.conn()?.catchup().await {
            Ok(catchup) => {
                let mut marks = ReadMarks::from_catchup(&catchup);
                for (target, id) in self.read.unsent(&self.state.shown) {
                    marks.sent(&target, id);
                }
                self.read = marks;
                Ok(())
            }
            Err(e) if retryable(&e) || !e.chain().any(|c| c.is::<RemoteError>()) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// Sends the read positions of what was shown since the last time (interactive
    /// mode only). A conversation the server refuses is not retried.
    ///
    /// # Errors
    /// A lost connection.
    pub async fn send_read_marks(&mut self) -> Result<()> {
        if !self.marks_read {
            return Ok(());
        }
        for (target, id) in self.read.unsent(&self.state.shown) {
            match self.conn()?.mark_read(&target, id).await {
                Ok(()) => self.read.sent(&target, id),
                Err(e) if retryable(&e) || !e.chain().any(|c| c.is::<RemoteError>()) => {
                    return Err(e);
                }
                Err(_) => self.read.sent(&target, id),
            }
        }
        Ok(())
    }

    /// A session over an already opened chat connection.
    pub fn with_conn(home: Home, conn: ChatConn, state: State) -> Session {
        Session {
            home,
            conn: Some(conn),
            state,
            backoff: Backoff::default(),
            transfers: JoinSet::new(),
            read: ReadMarks::default(),
            marks_read: false,
        }
    }

    /// The connection, or a network error while reconnecting.
    pub(crate) fn conn(&mut self) -> Result<&mut ChatConn> {
        self.conn
            .as_mut()
            .ok_or_else(|| crate::error::NetworkError::new("not connected").into())
    }

    /// Shows messages not shown before, in id order; returns how many it showed.
    pub fn show_new(&mut self, mut messages: Vec<ChatMessage>, ui: &mut impl Ui) -> usize {
        messages.sort_by_key(|m| m.id);
        let mut shown = 0;
        for m in &messages {
            if self.state.accept(m) {
                ui.message(m, &self.state.me);
                shown += 1;
            }
        }
        shown
    }

    /// Shows the backlog of `conversation` (a join's replay, a history) with the
    /// "new since you left" marker before its first message not read in an earlier
    /// session (none if everything was read, or the conversation never was).
    pub fn show_backlog(
        &mut self,
        conversation: &Target,
        mut messages: Vec<ChatMessage>,
        ui: &mut impl Ui,
    ) {
        messages.sort_by_key(|m| m.id);
        messages.retain(|m| !self.state.seen(m.id));
        match self.read.split(conversation, &messages) {
            Some((old, new)) if !new.is_empty() => {
                let (old, new) = (old.to_vec(), new.to_vec());
                self.show_new(old, ui);
                ui.new_since();
                self.show_new(new, ui);
            }
            _ => {
                self.show_new(messages, ui);
            }
        }
    }

    /// Joins `channel` asking for its last `history` messages; returns `#name — members`
    /// and those messages, for the caller to show (with [`Session::show_new`]).
    ///
    /// # Errors
    /// As [`ChatConn::join`].
    pub async fn join(
        &mut self,
        channel: &ChannelName,
        history: u32,
    ) -> Result<(String, Vec<ChatMessage>)> {
        let (name, members, replay) = self.conn()?.join(channel, history, None).await?;
        let line = format!("{name} — {}", super::render::presence_list(&members));
        let users = members.iter().map(|p| p.user.to_string());
        self.state.known_users.extend(users);
        self.state.joined.insert(name);
        // The channel's stream starts with this replay.
        replay.iter().for_each(|m| self.state.received(m));
        Ok((line, replay))
    }

    /// Runs until the input ends, `/quit`, the output closes, or a failure that a
    /// reconnect cannot fix (authentication, server identity, protocol).
    ///
    /// # Errors
    /// That failure.
    pub async fn run(
        &mut self,
        ui: &mut impl Ui,
        mut input: Option<mpsc::Receiver<Input>>,
    ) -> Result<()> {
        let start = tokio::time::Instant::now() + PING_INTERVAL;
        let mut ping = tokio::time::interval_at(start, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ui.ready(&self.state, true);
        while !ui.closed() {
            let Some(conn) = self.conn.as_mut() else {
                if self.wait_and_reconnect(ui, &mut input).await? {
                    return self.finish(ui).await;
                }
                ping.reset();
                continue;
            };
            let step = tokio::select! {
                ev = conn.next_event() => Step::Event(ev),
                line = next_input(&mut input) => Step::Input(line),
                _ = ping.tick() => Step::Ping,
                Some(done) = self.transfers.join_next(), if !self.transfers.is_empty() => {
                    Step::Transfer(done.unwrap_or_else(|e| Err(format!("sending failed: {e}"))))
                }
            };
            let result = match step {
                Step::Event(Ok(ev)) => self.on_event(ev, ui).await,
                Step::Event(Err(e)) => Err(e),
                Step::Input(None | Some(Input::End)) => return self.finish(ui).await,
                Step::Input(Some(Input::Line(line))) => {
                    let handled = match self.execute_line(&line, ui).await {
                        Ok(true) => return self.finish(ui).await,
                        Ok(false) => Ok(()),
                        Err(e) => self.connection_failed(e, ui),
                    };
                    // Exactly one prompt per line taken, once the line is dealt with.
                    ui.ready(&self.state, self.conn.is_some());
                    handled?;
                    Ok(())
                }
                Step::Ping => self.ping().await,
                Step::Transfer(Ok(line)) => {
                    ui.info(&line);
                    Ok(())
                }
                Step::Transfer(Err(line)) => {
                    ui.error(&line);
                    Ok(())
                }
            };
            if let Err(e) = result {
                self.connection_failed(e, ui)?;
            }
        }
        Ok(())
    }

    /// The keep-alive, which also sends read positions (at most every 30 s).
    async fn ping(&mut self) -> Result<()> {
        self.conn()?.ping().await?;
        self.send_read_marks().await
    }

    /// Handles one pushed event.
    async fn on_event(&mut self, event: ChatEvent, ui: &mut impl Ui) -> Result<()> {
        match event {
            ChatEvent::Message(m) => {
                self.state.received_live(&m);
                if self.state.accept(&m) {
                    ui.message(&m, &self.state.me);
                }
                Ok(())
            }
            ChatEvent::Missed { ref target, count } => {
                ui.event(&event);
                let floor = self.state.missed_floor(target);
                let shown = self.catch_up(target, floor, count, ui).await?;
                if (shown as u64) < count {
                    // Older than anything shown here (e.g. more stored direct messages
                    // than the server replays at connect): history still has them.
                    ui.info(&format!(
                        "{} of them predate this session; /history {count} in {target} lists them",
                        count - shown as u64,
                    ));
                }
                Ok(())
            }
            other => {
                ui.event(&other);
                Ok(())
            }
        }
    }

    /// Fetches what `target` has after `floor`, newest page first, until a page reaches
    /// `floor`; shows what was not shown yet, in order, and returns how many that was.
    /// `target`'s mark moves to the newest fetched.
    ///
    /// The `missed` messages lie just above `floor`, but paging starts at the newest,
    /// so the walk also fetches what is still on its way here live (up to the server's
    /// buffer for this connection). [`MAX_CATCH_UP`] therefore limits the walk only
    /// when more than that many were missed: a smaller gap is always fetched whole.
    ///
    /// # Errors
    /// As [`ChatConn::history`].
    pub async fn catch_up(
        &mut self,
        target: &Target,
        floor: u64,
        missed: u64,
        ui: &mut impl Ui,
    ) -> Result<usize> {
        let mut found: Vec<ChatMessage> = Vec::new();
        let mut before = None;
        loop {
            let page = self.conn()?.history(target, MAX_HISTORY, before).await?;
            let Some(oldest) = page.first().map(|m| m.id) else {
                break;
            };
            let full = page.len() >= MAX_HISTORY as usize;
            found.extend(page.into_iter().filter(|m| m.id > floor));
            if oldest <= floor || !full {
                break;
            }
            if missed > MAX_CATCH_UP as u64 && found.len() >= MAX_CATCH_UP {
                ui.error(&format!(
                    "more than {MAX_CATCH_UP} messages missed in {target}; older ones: /history",
                ));
                break;
            }
            before = Some(oldest);
        }
        if let Some(newest) = found.iter().map(|m| m.id).max() {
            self.state.covered(target.clone(), newest);
        }
        Ok(self.show_new(found, ui))
    }

    /// A request or the connection failed: a lost connection starts reconnecting, a
    /// refusal is shown, anything else ends the session.
    fn connection_failed(&mut self, e: anyhow::Error, ui: &mut impl Ui) -> Result<()> {
        if shutting_down(&e) {
            // A restart (or maintenance): expected, so said plainly, not as a failure.
            ui.info("the server is shutting down or restarting; reconnecting when it is back");
            self.conn = None;
            ui.connection(&self.state, false);
            return Ok(());
        }
        if retryable(&e) {
            ui.error(&format!("connection lost: {}", brief(&e)));
            self.conn = None;
            ui.connection(&self.state, false);
            return Ok(());
        }
        if e.chain().any(|c| c.is::<RemoteError>()) {
            ui.error(&escape_control(&format!("{e:#}")));
            return Ok(());
        }
        Err(e)
    }

    /// Offline: waits out the backoff (still taking `/quit` and the end of input), then
    /// tries once to reconnect. True when the user asked to leave meanwhile.
    async fn wait_and_reconnect(
        &mut self,
        ui: &mut impl Ui,
        input: &mut Option<mpsc::Receiver<Input>>,
    ) -> Result<bool> {
        let delay = self.backoff.next_delay();
        ui.info(&format!("reconnecting in {:.1} s", delay.as_secs_f64()));
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                line = next_input(input) => match line {
                    None | Some(Input::End) => return Ok(true),
                    Some(Input::Line(l)) => {
                        if super::command::parse(&l) == Ok(Some(super::command::Command::Quit)) {
                            return Ok(true);
                        }
                        ui.error("not connected: nothing was sent; reconnecting");
                        ui.ready(&self.state, false);
                    }
                },
            }
        }
        match self.reconnect(ui).await {
            Ok(()) => {
                self.backoff.reset();
                ui.info("reconnected");
                ui.connection(&self.state, true);
                Ok(false)
            }
            Err(e) if retryable(&e) => {
                self.conn = None;
                ui.error(&format!("reconnecting failed: {}", brief(&e)));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a new connection and restores the session: chat with direct messages
    /// replayed after the direct-message stream's mark, every channel re-joined with a
    /// replay after its own mark, away again if it was.
    async fn reconnect(&mut self, ui: &mut impl Ui) -> Result<()> {
        let (_login, client) = open_session(&self.home).await?;
        self.restore(ChatConn::new(client), ui).await
    }

    /// [`Session::reconnect`] over a new connection.
    async fn restore(&mut self, mut conn: ChatConn, ui: &mut impl Ui) -> Result<()> {
        conn.open(Some(self.state.direct_after())).await?;
        self.conn = Some(conn);
        // What was shown before the loss is marked first, so the positions fetched
        // next are where this user really left off.
        self.send_read_marks().await?;
        self.fetch_read_marks().await?;
        for channel in self.state.joined.clone() {
            let here = Target::Channel(channel.clone());
            let after = self.state.floor_of(&here);
            match self.conn()?.join(&channel, 0, Some(after)).await {
                Ok((_, _, replay)) => {
                    // The replay is the newest messages after `after`; if more were
                    // said, a `Missed` follows and is caught up from `after`. The
                    // mark moves with the first live message (or that catch-up).
                    self.state.rejoined(&channel, after);
                    if self.read.mark(&here).is_some() {
                        self.show_backlog(&here, replay, ui);
                    } else {
                        // Never read anywhere: everything missed is new.
                        if replay.iter().any(|m| !self.state.seen(m.id)) {
                            ui.new_since();
                        }
                        self.show_new(replay, ui);
                    }
                }
                Err(e) if !retryable(&e) && e.chain().any(|c| c.is::<RemoteError>()) => {
                    ui.error(&format!(
                        "could not re-join {channel}: {}",
                        escape_control(&format!("{e:#}"))
                    ));
                    self.state.joined.remove(&channel);
                }
                Err(e) => return Err(e),
            }
        }
        if self.state.away {
            self.conn()?.set_away(true).await?;
        }
        Ok(())
    }

    /// Leaving: lets files being sent finish (re-running a send resumes it anyway).
    async fn finish(&mut self, ui: &mut impl Ui) -> Result<()> {
        if self.conn.is_some()
            && let Err(e) = self.send_read_marks().await
        {
            ui.error(&format!(
                "could not save where you read up to: {}",
                brief(&e)
            ));
        }
        if !self.transfers.is_empty() {
            ui.info(&format!(
                "waiting for {} file send(s) to finish (Ctrl-C stops; sending again resumes)",
                self.transfers.len()
            ));
        }
        while let Some(done) = self.transfers.join_next().await {
            match done.unwrap_or_else(|e| Err(format!("sending failed: {e}"))) {
                Ok(line) => ui.info(&line),
                Err(line) => ui.error(&line),
            }
        }
        Ok(())
    }
}

/// The next input, or never when there is no input (follow mode).
///
/// # Cancel safety
/// Cancel-safe, as `mpsc::Receiver::recv`.
async fn next_input(input: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match input {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A connection failure in a few words for a chat line: what failed and its root
/// cause, without the links some causes carry.
fn brief(e: &anyhow::Error) -> String {
    let top = e.to_string();
    let root = e.root_cause().to_string();
    let root = root.split(": http").next().unwrap_or_default();
    let text = if root.is_empty() || top.contains(root) {
        top
    } else {
        format!("{top} ({root})")
    };
    escape_control(&text).into_owned()
}

/// Whether the server said it is shutting down (it drains on SIGTERM).
fn shutting_down(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<RemoteError>()
            .is_some_and(|r| r.code == ErrorCode::ShuttingDown)
    })
}

/// Whether reconnecting can fix `e`: the connection was lost, or the server is busy,
/// restarting, or closed an idle connection.
pub fn retryable(e: &anyhow::Error) -> bool {
    if error_kind(e) == ErrorKind::Network {
        return true;
    }
    e.chain().any(|c| {
        c.downcast_ref::<RemoteError>().is_some_and(|r| {
            matches!(
                r.code,
                ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Timeout
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_util::codec::Framed;
    use xfer_proto::{Frame, MessageBody, Request, Response, ServerCodec};

    use super::*;

    fn tg(s: &str) -> Target {
        Target::parse(s).unwrap()
    }
    use crate::client::Client;
    use crate::error::{AuthError, NetworkError, ProtocolError};
    use crate::target::ServerAddr;

    /// Records what a session shows.
    #[derive(Default)]
    struct Recorder {
        messages: Vec<u64>,
        events: usize,
        infos: Vec<String>,
    }

    impl Ui for Recorder {
        fn message(&mut self, msg: &ChatMessage, _me: &str) {
            self.messages.push(msg.id);
        }
        fn event(&mut self, _event: &ChatEvent) {
            self.events += 1;
        }
        fn info(&mut self, text: &str) {
            self.infos.push(text.to_string());
        }
        fn error(&mut self, text: &str) {
            self.infos.push(text.to_string());
        }
        /// Recorded as message 0, to see where it falls.
        fn new_since(&mut self) {
            self.messages.push(0);
        }
    }

    fn text(id: u64) -> ChatMessage {
        ChatMessage {
            id,
            time_unix_ms: 0,
            from: "bob".into(),
            target: tg("#lab"),
            body: MessageBody::Text(format!("m{id}")),
        }
    }

    type Server = Framed<tokio::io::DuplexStream, ServerCodec>;

    /// A session for alice (cursor at `last_id`) over an in-memory pipe; the server end.
    fn session(last_id: u64) -> (Session, Server, tempfile::TempDir) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("home"))).unwrap();
        let client = Client::over_stream(a, ServerAddr::parse("test:1").unwrap());
        let state = State::new("alice".into(), last_id);
        let s = Session::with_conn(home, ChatConn::new(client), state);
        let server = Framed::new(b, ServerCodec::new(xfer_proto::MAX_FRAME_LEN));
        (s, server, tmp)
    }

    async fn push(server: &mut Server, event: ChatEvent) {
        let frame = Frame::Message(Response::Event(Box::new(event)));
        server.send(frame).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_session_pings_every_30_seconds() {
        let (mut s, mut server, _tmp) = session(0);
        let (tx, rx) = mpsc::channel(1);
        let srv = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut at = Vec::new();
            for _ in 0..3 {
                match server.next().await {
                    Some(Ok(Frame::Message(Request::Ping))) => {
                        at.push(start.elapsed().as_secs());
                        server.send(Frame::Message(Response::Pong)).await.unwrap();
                    }
                    other => panic!("expected a ping, got {other:?}"),
                }
            }
            tx.send(Input::End).await.unwrap();
            at
        });
        s.run(&mut Recorder::default(), Some(rx)).await.unwrap();
        assert_eq!(srv.await.unwrap(), [30, 60, 90]);
    }

    #[tokio::test(start_paused = true)]
    async fn missed_messages_are_fetched_from_history_and_shown_once_in_order() {
        let (mut s, mut server, _tmp) = session(10);
        let (tx, rx) = mpsc::channel(1);
        let srv = tokio::spawn(async move {
            push(&mut server, ChatEvent::Message(text(11))).await;
            push(&mut server, ChatEvent::Message(text(11))).await;
            let missed = ChatEvent::Missed {
                target: tg("#lab"),
                count: 2,
            };
            push(&mut server, missed).await;
            // The client pages back from the newest message to the last one it saw.
            let Some(Ok(Frame::Message(Request::History { target, before, .. }))) =
                server.next().await
            else {
                panic!("expected a history request")
            };
            assert_eq!((&target, before), (&tg("#lab"), None));
            let history = Response::History {
                target,
                messages: (9..=15).map(text).collect(),
            };
            server.send(Frame::Message(history)).await.unwrap();
            push(&mut server, ChatEvent::Message(text(15))).await;
            push(&mut server, ChatEvent::Message(text(16))).await;
            let _ = server.next().await;
            drop(tx);
        });
        let mut ui = Recorder::default();
        // Time is paused: this returns as soon as the session has nothing left to do.
        let run = s.run(&mut ui, Some(rx));
        let idle = tokio::time::timeout(std::time::Duration::from_secs(5), run).await;
        assert!(idle.is_err(), "the session ended early: {idle:?}");
        srv.abort();
        assert_eq!(ui.messages, [11, 12, 13, 14, 15, 16]);
        assert_eq!(ui.events, 1, "the missed note");
        assert_eq!(s.state.floor_of(&tg("#lab")), 16);
        assert_eq!(s.state.direct_after(), 10, "no direct message came");
    }

    /// Answers `History` for #lab as a store holding messages 1..=`newest` would.
    fn serve_history(mut server: Server, newest: u64) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(Ok(Frame::Message(Request::History {
                target,
                count,
                before,
            }))) = server.next().await
            {
                let end = before.unwrap_or(newest + 1);
                let start = end.saturating_sub(u64::from(count)).max(1);
                let history = Response::History {
                    target,
                    messages: (start..end).map(text).collect(),
                };
                server.send(Frame::Message(history)).await.unwrap();
            }
        })
    }

    #[tokio::test]
    async fn a_missed_gap_is_fetched_whole_though_newer_messages_fill_the_walk() {
        // A stopped reader got #lab up to 996, lost the next 981 (its server buffer held
        // the newest 1024, on their way live): paging back from 3001 to 996 takes 2005
        // messages, more than MAX_CATCH_UP, yet only 981 were missed.
        let (mut s, server, _tmp) = session(996);
        let srv = serve_history(server, 3001);
        let missed = ChatEvent::Missed {
            target: tg("#lab"),
            count: 981,
        };
        let mut ui = Recorder::default();
        s.on_event(missed, &mut ui).await.unwrap();
        srv.abort();
        assert_eq!(ui.messages, (997..=3001).collect::<Vec<_>>());
        assert!(ui.infos.is_empty(), "{:?}", ui.infos);
        assert_eq!(s.state.floor_of(&tg("#lab")), 3001);
    }

    #[tokio::test]
    async fn a_catch_up_of_more_than_max_catch_up_missed_stops_and_says_so() {
        let (mut s, server, _tmp) = session(0);
        let srv = serve_history(server, 3001);
        let missed = ChatEvent::Missed {
            target: tg("#lab"),
            count: 2500,
        };
        let mut ui = Recorder::default();
        s.on_event(missed, &mut ui).await.unwrap();
        srv.abort();
        let newest: Vec<u64> = (3001 - MAX_CATCH_UP as u64 + 1..=3001).collect();
        assert_eq!(ui.messages, newest);
        assert!(
            ui.infos[0].starts_with("more than 2000 messages missed in #lab"),
            "{:?}",
            ui.infos
        );
    }

    fn dm(id: u64, from: &str, to: &str) -> ChatMessage {
        ChatMessage {
            id,
            time_unix_ms: 0,
            from: from.into(),
            target: tg(&format!("@{to}")),
            body: MessageBody::Text(format!("m{id}")),
        }
    }

    /// An in-memory connection for alice and its server end.
    fn pipe() -> (ChatConn, Server) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let client = Client::over_stream(a, ServerAddr::parse("test:1").unwrap());
        let server = Framed::new(b, ServerCodec::new(xfer_proto::MAX_FRAME_LEN));
        (ChatConn::new(client), server)
    }

    async fn request(server: &mut Server) -> Request {
        match server.next().await {
            Some(Ok(Frame::Message(r))) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reconnect_replays_each_stream_from_what_it_received() {
        let (mut s, mut server, _tmp) = session(90);
        s.state.joined.insert("lab".parse().unwrap());
        s.state.target = Some(tg("#lab"));
        let srv = tokio::spawn(async move {
            push(&mut server, ChatEvent::Message(text(95))).await;
            push(&mut server, ChatEvent::Message(dm(96, "bob", "alice"))).await;
            // bob's 100 in #lab is still queued when alice's line is stored as 101,
            // and the server goes away before writing 100.
            let Request::Say { target, .. } = request(&mut server).await else {
                panic!("expected a say")
            };
            assert_eq!(target, tg("#lab"));
            let said = Response::Said {
                id: 101,
                time_unix_ms: 0,
            };
            server.send(Frame::Message(said)).await.unwrap();
        });
        let mut ui = Recorder::default();
        for _ in 0..2 {
            let ev = s.conn().unwrap().next_event().await.unwrap();
            s.on_event(ev, &mut ui).await.unwrap();
        }
        assert!(!s.execute_line("hello", &mut ui).await.unwrap());
        srv.await.unwrap();
        assert_eq!(ui.messages, [95, 96, 101]);

        let (conn, mut server) = pipe();
        let srv = tokio::spawn(async move {
            let Request::ChatOpen { after } = request(&mut server).await else {
                panic!("expected ChatOpen")
            };
            assert_eq!(
                after,
                Some(96),
                "direct messages after the last one received"
            );
            let opened = Response::ChatOpened {
                user: "alice".into(),
                last_id: 102,
            };
            server.send(Frame::Message(opened)).await.unwrap();
            let Request::Join { channel, after, .. } = request(&mut server).await else {
                panic!("expected Join")
            };
            assert_eq!(channel, "#lab");
            assert_eq!(
                after,
                Some(95),
                "#lab after its last message received, not 101"
            );
            let mut own = text(101);
            own.from = "alice".into();
            let joined = Response::Joined {
                channel,
                members: Vec::new(),
                history: vec![text(100), own],
            };
            server.send(Frame::Message(joined)).await.unwrap();
            server
        });
        s.restore(conn, &mut ui).await.unwrap();
        let _server = srv.await.unwrap();
        assert_eq!(
            ui.messages,
            [95, 96, 101, 0, 100],
            "the marker (0), then 100; 101 not twice"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn missed_direct_messages_are_caught_up_from_that_conversation() {
        let (mut s, mut server, _tmp) = session(10);
        let (tx, rx) = mpsc::channel(1);
        let srv = tokio::spawn(async move {
            push(&mut server, ChatEvent::Message(dm(11, "bob", "alice"))).await;
            push(&mut server, ChatEvent::Message(text(14))).await;
            // 12 and 13 from bob were dropped from alice's queue.
            let missed = ChatEvent::Missed {
                target: tg("@bob"),
                count: 2,
            };
            push(&mut server, missed).await;
            let Request::History { target, before, .. } = request(&mut server).await else {
                panic!("expected a history request")
            };
            assert_eq!((&target, before), (&tg("@bob"), None));
            let history = Response::History {
                target,
                messages: vec![
                    dm(11, "bob", "alice"),
                    dm(12, "alice", "bob"),
                    dm(13, "bob", "alice"),
                ],
            };
            server.send(Frame::Message(history)).await.unwrap();
            let _ = server.next().await;
            drop(tx);
        });
        let mut ui = Recorder::default();
        let run = s.run(&mut ui, Some(rx));
        let idle = tokio::time::timeout(std::time::Duration::from_secs(5), run).await;
        assert!(idle.is_err(), "the session ended early: {idle:?}");
        srv.abort();
        assert_eq!(ui.messages, [11, 14, 12, 13]);
        assert!(
            !ui.infos.iter().any(|i| i.contains("predate")),
            "{:?}",
            ui.infos
        );
        assert_eq!(s.state.floor_of(&tg("@bob")), 13);
        assert_eq!(s.state.direct_after(), 11, "a catch-up is not the stream");
    }

    fn remote(code: ErrorCode) -> anyhow::Error {
        RemoteError {
            code,
            message: "m".into(),
        }
        .into()
    }

    #[tokio::test]
    async fn a_reconnect_marks_what_was_shown_then_marks_new_from_the_servers_position() {
        let (mut s, _server, _tmp) = session(90);
        s.marks_read = true;
        s.state.joined.insert("lab".parse().unwrap());
        let mut ui = Recorder::default();
        s.show_new(vec![text(95)], &mut ui);
        s.state.received(&text(95));
        let (conn, mut server) = pipe();
        let srv = tokio::spawn(async move {
            let Request::ChatOpen { .. } = request(&mut server).await else {
                panic!("expected ChatOpen")
            };
            let opened = Response::ChatOpened {
                user: "alice".into(),
                last_id: 99,
            };
            server.send(Frame::Message(opened)).await.unwrap();
            // What was on screen before the loss is marked read first.
            let Request::MarkRead { target, id } = request(&mut server).await else {
                panic!("expected MarkRead")
            };
            assert_eq!((target, id), (tg("#lab"), 95));
            server.send(Frame::Message(Response::Ok)).await.unwrap();
            let Request::Catchup = request(&mut server).await else {
                panic!("expected Catchup")
            };
            // Another machine of alice's read up to 97 meanwhile.
            let catchup = xfer_proto::Catchup {
                conversations: vec![xfer_proto::Unread {
                    target: tg("#lab"),
                    read: Some(97),
                    unread: 2,
                    mentions: 0,
                    last_id: 99,
                }],
                files: Vec::new(),
            };
            server
                .send(Frame::Message(Response::Catchup(catchup)))
                .await
                .unwrap();
            let Request::Join { channel, after, .. } = request(&mut server).await else {
                panic!("expected Join")
            };
            assert_eq!(after, Some(95));
            let joined = Response::Joined {
                channel,
                members: Vec::new(),
                history: (96..=99).map(text).collect(),
            };
            server.send(Frame::Message(joined)).await.unwrap();
            server
        });
        s.restore(conn, &mut ui).await.unwrap();
        let _server = srv.await.unwrap();
        assert_eq!(ui.messages, [95, 96, 97, 0, 98, 99], "the marker after 97");
    }

    #[test]
    fn connection_failures_are_brief() {
        let io = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: https://docs.rs/x",
        );
        let e: anyhow::Error = NetworkError::with_source("connection to h:1 failed", io).into();
        assert_eq!(
            brief(&e),
            "connection to h:1 failed (peer closed connection without sending TLS close_notify)"
        );
        assert_eq!(brief(&NetworkError::new("closed").into()), "closed");
    }

    #[test]
    fn only_connection_trouble_is_retried() {
        assert!(retryable(&NetworkError::new("closed").into()));
        assert!(retryable(&remote(ErrorCode::ShuttingDown)));
        assert!(retryable(&remote(ErrorCode::Busy)));
        assert!(retryable(&remote(ErrorCode::Timeout)));
        assert!(!retryable(&remote(ErrorCode::AuthFailed)));
        assert!(!retryable(&remote(ErrorCode::NotFound)));
        assert!(!retryable(&AuthError("expired".into()).into()));
        assert!(!retryable(&ProtocolError("garbage".into()).into()));
    }
}
