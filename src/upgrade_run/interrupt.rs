//! Ctrl-C and SIGTERM while `klm upgrade` runs. The first one ends the run
//! the way the workflow's exit handler would (what is in flight is rolled
//! back, held nodes released, the run closed failed); a second one is the
//! only way to leave at once, without cleaning up.

use std::sync::Arc;

use tokio::sync::watch;

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Interrupt,
    /// `kill`, or a pod or unit being stopped.
    Terminate,
    /// `klm abort`, recorded in the run record by a person.
    Abort,
}

impl Signal {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT (Ctrl-C)",
            Signal::Terminate => "SIGTERM",
            Signal::Abort => "klm abort",
        }
    }
}

/// The signals received so far: how many, and the latest.
#[derive(Debug, Clone)]
pub struct Interrupts {
    received: Arc<watch::Sender<(u32, Option<Signal>)>>,
}

impl Interrupts {
    /// Starts listening for Ctrl-C and SIGTERM (from now on, they no longer
    /// end the process by themselves).
    pub fn listen() -> std::io::Result<Interrupts> {
        let received = Interrupts::none().received;
        let sender = received.clone();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    Some(()) = interrupt.recv() => Signal::Interrupt,
                    Some(()) = terminate.recv() => Signal::Terminate,
                    else => return,
                };
                Interrupts {
                    received: sender.clone(),
                }
                .receive(signal);
            }
        });
        Ok(Interrupts { received })
    }

    /// Interrupts that never arrive (a run driven without signals, in tests).
    pub fn none() -> Interrupts {
        Interrupts {
            received: Arc::new(watch::channel((0, None)).0),
        }
    }

    /// Records a signal as if it had arrived.
    pub fn receive(&self, signal: Signal) {
        self.received.send_modify(|(count, last)| {
            *count += 1;
            *last = Some(signal);
        });
    }

    /// How many signals arrived so far.
    pub fn count(&self) -> u32 {
        self.received.borrow().0
    }

    /// The latest signal, if any arrived.
    pub fn last(&self) -> Option<Signal> {
        self.received.borrow().1
    }

    /// Waits until at least `count` signals arrived; returns the latest.
    pub async fn reached(&self, count: u32) -> Signal {
        let mut received = self.received.subscribe();
        let latest = received
            .wait_for(|(n, _)| *n >= count)
            .await
            .map(|state| state.1);
        match latest {
            Ok(signal) => signal.unwrap_or(Signal::Interrupt),
            // Cannot happen: this struct keeps the sender.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_second_signal_is_counted_apart_from_the_first() {
        let interrupts = Interrupts::none();
        assert_eq!(interrupts.count(), 0);
        interrupts.receive(Signal::Terminate);
        assert_eq!(interrupts.reached(1).await, Signal::Terminate);
        let second = tokio::spawn({
            let interrupts = interrupts.clone();
            async move { interrupts.reached(2).await }
        });
        interrupts.receive(Signal::Interrupt);
        assert_eq!(second.await.unwrap(), Signal::Interrupt);
        assert_eq!(interrupts.count(), 2);
    }
}
