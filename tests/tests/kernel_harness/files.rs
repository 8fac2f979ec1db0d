//! File-hold helpers shared by the vm_enforce* tests.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use super::*;
use guard::{action::Action, kernel_maps::PathScope, policy::Policy, programs::Probe};
use guard_common::{EventKind, Rule, session_flags};
use guard_tests::require_root;

pub const FILE_OPS: u32 = EventKind::Unlink.bit()
    | EventKind::Rmdir.bit()
    | EventKind::Rename.bit()
    | EventKind::Truncate.bit()
    | EventKind::OpenWrite.bit();

/// A session whose `protected/` directory needs a person for every change.
pub struct ProtectedTree {
    pub e: Enforced,
    pub scratch: Scratch,
    pub protected: PathBuf,
}

pub fn protected_tree(test: &str) -> Option<ProtectedTree> {
    require_root();
    let scratch = Scratch::new(test);
    let root = std::fs::canonicalize(&scratch.dir).unwrap();
    let protected = root.join("protected");
    std::fs::create_dir_all(&protected).unwrap();
    let policy = Policy::embedded_default()
        .with_workspace(root.join("work"))
        .with_protected(&protected);
    let e = Enforced::start_lsm(test, &Probe::LSM, session_flags::WATCH_FILES, policy)?;
    e.tables
        .lock()
        .unwrap()
        .set_path_rule(
            e.session,
            &protected,
            PathScope::Below,
            Rule::holding(FILE_OPS),
        )
        .expect("adding the protected rule");
    Some(ProtectedTree {
        e,
        scratch,
        protected,
    })
}

pub fn rm(e: &Enforced, path: &Path) -> std::process::Child {
    session_command(&e.cg, &["rm", path.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rm")
}

pub fn held_unlink_of(e: &Enforced, path: &Path) -> guard::holds::Hold {
    let hold = e.wait_hold(Duration::from_secs(20));
    assert_eq!(hold.request.backend, "lsm");
    assert_eq!(
        hold.request.action,
        Action::Unlink {
            path: path.to_path_buf()
        },
        "the hold must name the full resolved path"
    );
    assert!(
        hold.request.verdict.decision.holds(),
        "policy must ask about a protected file: {:?}",
        hold.request.verdict
    );
    hold
}
