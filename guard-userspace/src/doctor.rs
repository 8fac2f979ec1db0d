//! `guard doctor`: what this kernel supports, which backend guard uses for each
//! action, what each missing feature costs, and how to turn BPF LSM on.

use crate::backend::{self, Backend, Detection};

/// Prints the report; returns the exit code: 0 when file and connect actions
/// can be prevented (LSM or seccomp), 2 when they can only be reported.
pub fn run(json: bool) -> i32 {
    let detection = backend::detect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&detection).expect("detection serialises")
        );
    } else {
        print!("{}", render(&detection));
    }
    exit_code(&detection)
}

pub fn exit_code(d: &Detection) -> i32 {
    match d.backend_for(crate::action::ActionKind::Unlink) {
        Backend::Lsm | Backend::Seccomp => 0,
        _ => 2,
    }
}

/// The report for people.
pub fn render(d: &Detection) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("kernel: {}", d.kernel));
    if !d.running_as_root {
        line(
            "warning: not running as root: BPF probes fail with EPERM; run `sudo guard doctor`"
                .into(),
        );
    }
    line("features:".into());
    for f in &d.features {
        let mark = if f.available { "yes" } else { "no " };
        let detail = f.detail.as_deref().unwrap_or("");
        line(format!("  [{mark}] {:<27} {detail}", f.name));
        if !f.available {
            line(format!("        cost: {}", f.cost_if_missing));
        }
    }
    line("backends for sessions guard launches:".into());
    for c in &d.launched {
        let kind = serde_json::to_value(c.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        line(format!("  {kind:<11} {}", c.backend.as_str()));
    }
    line(format!(
        "backend for adopted processes (file, connect): {}{}",
        d.adopted.as_str(),
        if d.adopted == Backend::Bounded {
            " (one call completes before the stop: reported, not prevented)"
        } else {
            ""
        }
    ));
    if let Some(list) = &d.lsm_list {
        line(format!("boot-time LSM list: {list}"));
    }
    if let Some(hint) = &d.enable_bpf_lsm {
        line(format!(
            "BPF LSM is not active; using the seccomp backend (see docs/backends.md). To turn it on: {hint}"
        ));
    }
    out
}
