//! Policy evaluation tests: parsing errors, merging, decisions.

use std::{ffi::OsString, path::Path, sync::Arc, time::Duration};

use super::*;
use crate::action::Action;

fn policy() -> Policy {
    Policy::embedded_default()
        .with_home("/home/u")
        .with_workspace("/home/u/ws")
}

fn exec(p: &Policy, argv: &[&str]) -> Verdict {
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    p.evaluate(&Policy::exec_action(&argv, Path::new("/home/u/ws")))
}

#[test]
fn done_when_examples() {
    let p = policy();
    let v = exec(&p, &["terraform", "destroy", "-auto-approve"]);
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Ask, "infra.destroy"),
        "{v:?}"
    );
    let v = exec(&p, &["env", "FOO=1", "bash", "-c", "rm -rf ~/"]);
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Ask, "fs.delete-outside-workspace"),
        "{v:?}"
    );
    assert!(
        v.reason.contains("/home/u") && v.reason.contains("bash -c"),
        "{}",
        v.reason
    );
    let v = exec(
        &p,
        &["rm", "-rf", "node_modules", "target", "dist", ".next"],
    );
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
}

#[test]
fn broken_policy_names_line_and_column() {
    let e = Policy::from_yaml(
        "version: 1\nfiles:\n  - id: x\n    paths: [a]\n    decision: maybe\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!((e.line, e.column), (5, 15), "{e}");
    assert!(
        e.to_string()
            .starts_with("p.yaml:5:15: files[0].decision: unknown variant `maybe`"),
        "{e}"
    );
    let e = Policy::from_yaml(
        "version: 1\nexec:\n  - id: x\n    clases: [fs.delete]\n    decision: ask\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("unknown field `clases`"), "{e}");
    let e = Policy::from_yaml(
        "version: 1\nexec:\n  - id: x\n    classes: [fs.delet]\n    decision: ask\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("use one of fs.delete"), "{e}");
    let e = Policy::from_yaml(
        "version: 1\nrates:\n  - id: r\n    count: 3\n    window: 5 parsecs\n    decision: ask\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    let e = Policy::from_yaml(
        "version: 1\nnetwork:\n  - id: n\n    cidrs: [10.0.0.0/33]\n    decision: ask\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    let e = Policy::from_yaml("version: 1\nfiles:\n  - id: a\n    paths: [x]\n    decision: ask\n  - id: a\n    paths: [y]\n    decision: ask\n", "p.yaml").unwrap_err();
    assert_eq!(e.line, 6, "{e}");
    let e = Policy::from_yaml(
        "version: 1\nextends: default\ndisable: [git.force]\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("did you mean"), "{e}");
    let e = Policy::from_yaml("version: 2\n", "p.yaml").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    let e = Policy::from_yaml("version: 1\nfiles: [\n", "p.yaml").unwrap_err();
    assert!(e.line >= 2, "{e}");
}

#[test]
fn extends_default_overrides_and_disables() {
    let p = Policy::from_yaml(
        "version: 1\nextends: default\ndisable: [infra.destroy]\nask:\n  timeout: 30s\nexec:\n  - id: k8s.delete\n    classes: [k8s.delete]\n    decision: deny\n",
        "p.yaml",
    )
    .unwrap()
    .with_workspace("/ws");
    assert_eq!(p.ask_timeout(), Duration::from_secs(30));
    assert_eq!(p.timeout_decision(), Decision::Deny);
    let argv = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
    let v = p.evaluate(&Policy::exec_action(
        &argv(&["terraform", "destroy"]),
        Path::new("/ws"),
    ));
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    let v = p.evaluate(&Policy::exec_action(
        &argv(&["kubectl", "delete", "ns", "prod"]),
        Path::new("/ws"),
    ));
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Deny, "k8s.delete")
    );
    assert!(p.rule_ids().contains(&"git.rewrite-remote".to_string()));
}

#[test]
fn rate_rule_freezes_after_the_threshold_and_resets_with_time() {
    let clock = Arc::new(rate::ManualClock::default());
    let p = Policy::from_yaml(
        "version: 1\nworkspace:\n  build_dirs: [target]\nrates:\n  - id: rate.burst\n    count: 3\n    window: 10s\n    decision: freeze\n",
        "p.yaml",
    )
    .unwrap()
    .with_workspace("/ws")
    .with_clock(clock.clone());
    let unlink = |n: u32| Action::Unlink {
        path: format!("/ws/src/f{n}").into(),
    };
    for n in 0..3 {
        assert_eq!(p.evaluate(&unlink(n)).decision, Decision::Allow);
    }
    let v = p.evaluate(&unlink(4));
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Freeze, "rate.burst")
    );
    // Build directories never count.
    let build = Action::Unlink {
        path: "/ws/target/x".into(),
    };
    assert_eq!(p.evaluate(&build).decision, Decision::Allow);
    clock.advance(Duration::from_secs(11));
    assert_eq!(p.evaluate(&unlink(5)).decision, Decision::Allow);
}

#[test]
fn workspace_locations() {
    let p = policy().with_workspace("/tmp/ws2");
    assert_eq!(
        p.locate(Path::new("/home/u/ws/src/a.rs")),
        Location::Workspace
    );
    assert_eq!(
        p.locate(Path::new("/home/u/ws/pkg/node_modules/x")),
        Location::BuildDir
    );
    assert_eq!(p.locate(Path::new("/home/u/ws")), Location::Outside);
    assert_eq!(p.locate(Path::new("/home/u")), Location::Outside);
    assert_eq!(p.locate(Path::new("/home/u/ws2/x")), Location::Outside);
    assert_eq!(p.locate(Path::new("/tmp/x")), Location::Scratch);
    assert_eq!(
        p.locate(Path::new("/tmp/ws2")),
        Location::Outside,
        "a root in scratch is still a root"
    );
    let v = exec(&p, &["rm", "-rf", "/tmp/ws2"]);
    assert_eq!(v.decision, Decision::Ask, "{v:?}");
}

#[test]
fn network_rules_match_cidrs_resolved_names_wildcards_ports_and_sockets() {
    let p = Policy::from_yaml(
        "version: 1\nnetwork:\n  - id: net.prod-db\n    hosts: [db.prod.example.com, \"*.prod.example.com\"]\n    cidrs: [10.20.0.0/16]\n    ports: [5432, \"6000-6010\"]\n    decision: ask\n  - id: net.pg-socket\n    unix: [\"/run/postgresql/*\"]\n    decision: ask\n",
        "p.yaml",
    )
    .unwrap();
    let connect = |s: &str| Action::Connect {
        endpoint: Endpoint::Inet {
            addr: s.parse().unwrap(),
        },
    };
    assert_eq!(p.evaluate(&connect("10.20.1.2:5432")).rule, "net.prod-db");
    assert_eq!(
        p.evaluate(&connect("10.20.1.2:6005")).decision,
        Decision::Ask
    );
    assert_eq!(
        p.evaluate(&connect("10.20.1.2:80")).decision,
        Decision::Allow
    );
    assert_eq!(
        p.evaluate(&connect("192.0.2.7:5432")).decision,
        Decision::Allow
    );
    assert_eq!(
        p.hosts_to_resolve(),
        vec!["db.prod.example.com".to_string()]
    );
    p.refresh_hosts(|_| Ok(vec!["192.0.2.7".parse().unwrap()]));
    assert_eq!(
        p.evaluate(&connect("192.0.2.7:5432")).decision,
        Decision::Ask
    );
    assert_eq!(
        p.evaluate_connect_name("replica.prod.example.com", 5432)
            .decision,
        Decision::Ask
    );
    assert_eq!(
        p.evaluate_connect_name("prod.example.com.evil", 5432)
            .decision,
        Decision::Allow
    );
    let sock = Action::Connect {
        endpoint: Endpoint::Unix {
            path: "/run/postgresql/.s.PGSQL.5432".into(),
        },
    };
    assert_eq!(p.evaluate(&sock).rule, "net.pg-socket");
}

#[test]
fn protected_prefix_and_file_rules() {
    let p = policy().with_protected("/srv/prod");
    let v = p.evaluate(&Action::Unlink {
        path: "/srv/prod/data.bin".into(),
    });
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Ask, "files.protected")
    );
    let v = p.evaluate(&Action::Unlink {
        path: "/home/u/.ssh/id_rsa".into(),
    });
    assert_eq!(v.rule, "files.ssh-keys");
    let v = p.evaluate(&Action::OpenWrite {
        path: "/home/u/.ssh/known_hosts".into(),
    });
    assert_eq!(v.decision, Decision::Allow);
    let v = p.evaluate(&Action::Rename {
        from: "/home/u/ws/a".into(),
        to: "/home/u/.ssh/authorized_keys".into(),
    });
    assert_eq!(v.rule, "files.ssh-keys");
    let v = exec(&p, &["rm", "-rf", ".git"]);
    assert_eq!(v.rule, "fs.delete-protected", "{v:?}");
}
