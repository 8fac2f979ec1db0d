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
    // Clones share counters; a fresh copy starts from zero.
    assert_eq!(p.clone().evaluate(&unlink(6)).decision, Decision::Freeze);
    assert_eq!(
        p.clone()
            .with_fresh_counters()
            .evaluate(&unlink(7))
            .decision,
        Decision::Allow
    );
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
    p.set_resolved("db.prod.example.com", vec!["192.0.2.7".parse().unwrap()]);
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

#[test]
fn json_schema_matches_the_parser() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../policies/guard-policy.schema.json"))
            .expect("the schema is JSON");
    let classes: Vec<&str> = schema["$defs"]["class"]["enum"]
        .as_array()
        .expect("class enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = exec::Class::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(classes, ours, "regenerate the class enum in the schema");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let top = keys(&schema["properties"]);
    assert_eq!(
        top,
        [
            "ask",
            "controller",
            "defaults",
            "disable",
            "exec",
            "extends",
            "files",
            "network",
            "rates",
            "version",
            "workspace"
        ]
    );
    // Every key the schema allows in a rule is accepted by the parser.
    let rule = "version: 1\nfiles:\n  - {id: a, paths: [x], except: [y], ops: [unlink], where: any, decision: ask, reason: r}\nrates:\n  - {id: b, ops: [unlink], where: any, except: [y], count: 1, window: 1s, ignore_recent: true, decision: ask, reason: r}\nexec:\n  - {id: c, classes: [fs.delete], programs: [rm], targets: [protected], refs: [main], decision: ask, reason: r}\n  - {id: c2, programs: [make], args: [deploy*], decision: ask}\nnetwork:\n  - {id: d, hosts: [a.b], cidrs: [10.0.0.0/8], ports: [1], unix: [/x], decision: ask, reason: r}\nworkspace: {roots: [/w], build_dirs: [t], scratch: [/tmp]}\ndefaults: {exec: allow, unlink: allow, rmdir: allow, rename: allow, truncate: allow, open_write: allow, connect: allow}\nask: {timeout: 1s, on_timeout: deny}\ncontroller: {on_loss: fail_open}\n";
    Policy::from_yaml(rule, "all-keys.yaml").unwrap_or_else(|e| panic!("{e}"));
    for (section, example) in [
        ("files", "a"),
        ("rates", "b"),
        ("exec", "c"),
        ("network", "d"),
    ] {
        let allowed = keys(&schema["properties"][section]["items"]["properties"]);
        // The rule with this id and its variant (`c2`) together.
        let line: String = rule
            .lines()
            .filter(|l| {
                l.contains(&format!("id: {example},")) || l.contains(&format!("id: {example}2,"))
            })
            .collect();
        let used: usize = allowed
            .iter()
            .filter(|k| line.contains(&format!("{k}:")))
            .count();
        assert_eq!(
            used,
            allowed.len(),
            "{section}: the test exercises every schema key"
        );
    }
}

#[test]
fn odd_input_never_panics() {
    let p = policy();
    use std::os::unix::ffi::OsStringExt;
    let long = format!("/home/u/ws/{}", "a/".repeat(2048));
    let argvs: Vec<Vec<OsString>> = vec![
        vec![OsString::from_vec(vec![0xff, 0xfe]), OsString::from("-rf")],
        vec![
            OsString::from("rm"),
            OsString::from_vec(b"/home/u/\xff\n dir".to_vec()),
        ],
        vec![
            OsString::from("rm"),
            OsString::from("-rf"),
            OsString::from(long.clone()),
        ],
        vec![
            OsString::from("bash"),
            OsString::from("-c"),
            OsString::from("x".repeat(300_000)),
        ],
        vec![],
    ];
    for argv in argvs {
        let _ = p.evaluate(&Policy::exec_action(&argv, Path::new("/home/u/ws")));
    }
    let v = p.evaluate(&Policy::exec_action(
        &[
            OsString::from("rm"),
            OsString::from_vec(b"/home/u/\xff\n dir".to_vec()),
        ],
        Path::new("/home/u/ws"),
    ));
    assert_eq!(
        v.decision,
        Decision::Ask,
        "a non-UTF-8 path outside the workspace still asks"
    );
    let _ = p.evaluate(&Action::Unlink { path: long.into() });
    let _ = p.kernel_tables();
    for source in [
        "",
        "\0",
        "version: 1\n\tfiles: x",
        "[",
        "version: !!binary aGk=",
        "version: 1\nfiles:\n  - *anchor\n",
        "version: 1\nexec: ~\n",
    ] {
        let _ = Policy::from_yaml(source, "odd.yaml");
    }
}

#[test]
fn wrapped_and_direct_commands_share_a_grant_key() {
    let p = policy();
    let key = |a: &[&str]| {
        let argv: Vec<OsString> = a.iter().map(OsString::from).collect();
        p.explain(&Policy::exec_action(&argv, Path::new("/home/u/ws")))
            .grant_key
    };
    let direct = key(&["rm", "-rf", "/home/u/x"]);
    assert_eq!(
        direct,
        "fs.delete-outside-workspace|fs.delete|rm -r of /home/u/x"
    );
    assert_eq!(key(&["sudo", "rm", "-rf", "/home/u/x"]), direct);
    assert_eq!(key(&["bash", "-c", "rm -rf ~/x"]), direct);
    assert_ne!(key(&["rm", "-rf", "/home/u/y"]), direct);
}

#[test]
fn program_rules_with_argument_globs() {
    let p = Policy::from_yaml(
        "version: 1\nexec:\n  - id: deploy.prod\n    programs: [make, \"deploy*.sh\"]\n    args: [\"prod*\"]\n    decision: ask\n",
        "p.yaml",
    )
    .unwrap();
    let argv = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
    let v = p.evaluate(&Policy::exec_action(
        &argv(&["make", "-j4", "production"]),
        Path::new("/w"),
    ));
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Ask, "deploy.prod"),
        "{v:?}"
    );
    let v = p.evaluate(&Policy::exec_action(
        &argv(&["bash", "-c", "./scripts/deploy-app.sh prod"]),
        Path::new("/w"),
    ));
    assert_eq!(v.decision, Decision::Ask, "{v:?}");
    let v = p.evaluate(&Policy::exec_action(
        &argv(&["make", "test"]),
        Path::new("/w"),
    ));
    assert_eq!(v.decision, Decision::Allow);
    let e = Policy::from_yaml("version: 1\nexec:\n  - id: x\n    classes: [fs.delete]\n    args: [a]\n    decision: ask\n", "p.yaml").unwrap_err();
    assert!(
        e.message.contains("args: applies to rules with programs"),
        "{e}"
    );
}
