//! VM tier: every LSM hook guard uses passes the verifier and attaches on
//! this kernel, with the struct offsets read from its BTF. Prints how long
//! each took (the path walk is the verifier's largest job). Skipped with the
//! reason on a kernel without BPF LSM; a failure in the VM.

mod kernel_harness;

use std::{io::Write as _, time::Instant};

use guard::programs::{Probe, ProgramSet};
use guard_tests::{TestCgroup, require_root};

#[test]
fn every_lsm_hook_verifies_and_attaches() {
    require_root();
    let cg = TestCgroup::new("attach");
    for probe in Probe::LSM {
        let started = Instant::now();
        let set = ProgramSet::load(cg.cgroup.depth().unwrap(), &[probe])
            .expect("loading guard's eBPF object");
        if !kernel_harness::lsm_attached("vm_enforce_attach", &set, &[probe]) {
            return;
        }
        // Straight to fd 2: libtest hides eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "vm_enforce_attach: {probe} loaded and attached in {:?}",
            started.elapsed()
        );
    }
}
