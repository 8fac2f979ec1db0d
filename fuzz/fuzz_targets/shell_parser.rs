//! Any text as a `sh -c` string: commands or an error, never a panic or hang.
#![no_main]

use guard::policy::exec::shell;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|script: &str| {
    let _ = shell::parse(script);
    let _ = shell::split(script);
});
