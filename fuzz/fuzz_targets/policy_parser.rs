//! Any text given as a policy file: an error or a policy, never a panic or hang.
#![no_main]

use guard::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    if let Ok(policy) = Policy::from_yaml(source, "fuzz.yaml") {
        let policy = policy.with_workspace("/w").with_home("/h");
        let _ = policy.kernel_tables();
        let _ = policy.rule_ids();
    }
});
