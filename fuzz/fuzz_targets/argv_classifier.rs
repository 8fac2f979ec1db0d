//! Any argv (bytes, not necessarily UTF-8) through the classifiers and the
//! default policy: a verdict, never a panic or hang.
#![no_main]

use std::{ffi::OsString, os::unix::ffi::OsStringExt, path::Path, sync::OnceLock};

use guard::policy::{Policy, exec};
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::embedded_default().with_workspace("/w").with_home("/h"))
}

fuzz_target!(|argv: Vec<Vec<u8>>| {
    let argv: Vec<OsString> = argv.into_iter().take(64).map(OsString::from_vec).collect();
    let _ = exec::classify(&argv, Path::new("/usr/bin/x"), Path::new("/w"), Path::new("/h"));
    let _ = policy().evaluate(&Policy::exec_action(&argv, Path::new("/w/sub")));
});
