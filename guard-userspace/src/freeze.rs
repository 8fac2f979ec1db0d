//! Freezing a session cgroup on behalf of several holders at once: a
//! `freeze` decision keeps the session frozen while its hold is pending, and
//! the terminal prompt freezes it while it owns the terminal. The cgroup
//! thaws when the last holder lets go.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use crate::{
    cgroup::Cgroup,
    decision::Decision,
    holds::{Hold, HoldId, HoldObserver, Outcome},
};

/// A counted `cgroup.freeze` of one session.
pub struct SessionFreeze {
    cgroup: Cgroup,
    holders: Mutex<usize>,
}

impl SessionFreeze {
    pub fn new(cgroup: Cgroup) -> Arc<Self> {
        Arc::new(Self {
            cgroup,
            holders: Mutex::new(0),
        })
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Freezes the session (if it is not already) for one more holder.
    pub fn hold(&self) {
        let mut n = self.holders.lock().expect("freeze count poisoned");
        *n += 1;
        if *n == 1
            && let Err(e) = self.cgroup.set_frozen(true)
        {
            log::warn!("cannot freeze the session: {e:#}");
        }
    }

    /// Lets go of one hold; the last one thaws the session.
    pub fn release(&self) {
        let mut n = self.holders.lock().expect("freeze count poisoned");
        *n = n.saturating_sub(1);
        if *n == 0
            && let Err(e) = self.cgroup.set_frozen(false)
        {
            log::error!("cannot thaw the session: {e:#}");
        }
    }
}

/// Keeps a session frozen while any of its `freeze`-decision holds is pending.
pub struct FreezeOnHold {
    session: String,
    freeze: Arc<SessionFreeze>,
    frozen: Mutex<HashSet<HoldId>>,
}

impl FreezeOnHold {
    pub fn new(session: String, freeze: Arc<SessionFreeze>) -> Arc<Self> {
        Arc::new(Self {
            session,
            freeze,
            frozen: Mutex::new(HashSet::new()),
        })
    }
}

impl HoldObserver for FreezeOnHold {
    fn opened(&self, hold: &Hold) {
        if hold.request.session == self.session
            && hold.request.verdict.decision == Decision::Freeze
            && self
                .frozen
                .lock()
                .expect("freeze set poisoned")
                .insert(hold.id)
        {
            self.freeze.hold();
        }
    }

    fn closed(&self, outcome: &Outcome) {
        if self
            .frozen
            .lock()
            .expect("freeze set poisoned")
            .remove(&outcome.hold.id)
        {
            self.freeze.release();
        }
    }
}
