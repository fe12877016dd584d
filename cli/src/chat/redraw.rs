//! Redrawing the prompt while a line is being typed: the prompt says whether the
//! session is connected (`(offline) #lab>`), and that can change under the user's
//! fingers. The line editor cannot change its prompt in the middle of a line, so the
//! reader leaves it and starts again with the new prompt and the same text and cursor
//! (recorded by the editor's helper, [`super::complete::Draft`]).
//!
//! The editor leaves a line on an interrupt, and it turns `SIGINT` into one while it
//! reads (at a terminal, Ctrl-C is a key then, so the signal can only be this nudge).
//! [`nudge`] raises it, noting that it is a nudge; whoever takes the signal — the
//! editor, or this module's listener when the editor has just finished its line —
//! takes the note, so a nudge never passes for Ctrl-C. Outside the editor, the
//! listener turns a real Ctrl-C into leaving the session, and a second one ends the
//! process (as Ctrl-C did before the listener existed).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::session::Input;

/// A nudge was raised and not yet taken.
static NUDGED: AtomicBool = AtomicBool::new(false);

/// Makes the editor leave the line it is reading (it returns "interrupted"). At most
/// one nudge is on its way at a time.
pub fn nudge() {
    if NUDGED.swap(true, Ordering::SeqCst) {
        return;
    }
    if nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT).is_err() {
        NUDGED.store(false, Ordering::SeqCst);
    }
}

/// Whether an interrupt was a nudge (and takes the note).
pub fn take_nudge() -> bool {
    NUDGED.swap(false, Ordering::SeqCst)
}

/// Handles `SIGINT` outside the editor from now on: a nudge that arrived as the editor
/// finished is dropped, a Ctrl-C sends [`Input::End`] on `lines`, and a second one
/// exits with 130.
///
/// # Errors
/// The signal handler cannot be installed.
pub fn listen(lines: mpsc::Sender<Input>) -> std::io::Result<()> {
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut asked = false;
        while interrupts.recv().await.is_some() {
            if take_nudge() {
                continue;
            }
            if asked {
                std::process::exit(130);
            }
            asked = true;
            let _ = lines.send(Input::End).await;
        }
    });
    Ok(())
}
