//! The policy corpus (tests/corpus/*.yaml) against the embedded default
//! policy, the example policies with their cases, and the `guard policy` CLI.
//! No root or kernel needed.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use guard::{
    cli::{Cli, Command},
    decision::Decision,
    policy::{Policy, cases::CaseFile, cli},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn run_corpus(name: &str) -> Vec<guard::policy::cases::CaseResult> {
    let path = repo().join("tests/corpus").join(name);
    let cases = CaseFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for (i, case) in cases.cases.iter().enumerate() {
        assert!(
            case.rule.is_some(),
            "{name} case {} states no rule id",
            i + 1
        );
    }
    let results = cases.run(&Policy::embedded_default());
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "case {} ({}): expected {} by {}, got {} by {}: {}",
                r.index,
                r.name,
                r.expected,
                r.expected_rule.as_deref().unwrap_or("-"),
                r.decision,
                r.rule,
                r.reason
            )
        })
        .collect();
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    results
}

#[test]
fn destructive_corpus_is_held() {
    let results = run_corpus("destructive.yaml");
    assert!(
        results.len() >= 80,
        "only {} destructive cases",
        results.len()
    );
    for r in &results {
        assert!(
            r.decision >= Decision::Ask,
            "case {} ({}) is destructive but gets {}",
            r.index,
            r.name,
            r.decision
        );
    }
    println!("destructive corpus: {} cases held", results.len());
}

/// Every destructive command's program is in the kernel's exec watch set, so
/// the exec stops for userspace before it runs.
#[test]
fn destructive_commands_are_watched_in_the_kernel() {
    let cases = CaseFile::load(&repo().join("tests/corpus/destructive.yaml")).unwrap();
    let tables = Policy::embedded_default()
        .with_workspace("/home/agent/project")
        .kernel_tables();
    let mut checked = 0;
    for case in &cases.cases {
        let Some(cmd) = &case.cmd else { continue };
        let words = guard::policy::exec::shell::split(cmd).unwrap();
        let argv0 = words[0]
            .words
            .iter()
            // Skip `NAME=value` prefixes: the program comes after them.
            .find(|w| !w.contains('='))
            .expect("a program");
        assert!(
            tables.exec_goes_up(Path::new(argv0)),
            "{argv0} (from {cmd:?}) is not in the exec watch set"
        );
        checked += 1;
    }
    assert!(checked >= 80);
}

#[test]
fn benign_corpus_passes_without_a_hold() {
    let results = run_corpus("benign.yaml");
    assert!(results.len() >= 40, "only {} benign cases", results.len());
    for r in &results {
        assert!(
            !r.decision.holds() && r.decision <= Decision::Log,
            "case {} ({}) is ordinary work but gets {}",
            r.index,
            r.name,
            r.decision
        );
    }
    println!("benign corpus: {} cases pass", results.len());
}

#[test]
fn example_policies_lint_and_pass_their_cases() {
    let dir = repo().join("policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("policies/ exists") {
        let path = entry.expect("readable entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || name.ends_with(".cases.yaml") {
            continue;
        }
        let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let cases_path = path.with_file_name(name.replace(".yaml", ".cases.yaml"));
        if cases_path.exists() {
            let cases = CaseFile::load(&cases_path).unwrap_or_else(|e| panic!("{e}"));
            let failed: Vec<_> = cases
                .run(&policy)
                .into_iter()
                .filter(|r| !r.passed)
                .collect();
            assert!(failed.is_empty(), "{}: {failed:#?}", cases_path.display());
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the default and at least one example policy"
    );
}

/// Runs `guard ARGS` in-process; returns (exit code, stdout, stderr).
fn guard(args: &[&str]) -> (i32, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("guard").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("guard {args:?}: {e}"));
    let Command::Policy { command } = cli.command else {
        panic!("not a policy command: {args:?}");
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run_with(command, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[test]
fn explain_gives_decision_rule_and_exit_code() {
    let (code, out, _) = guard(&[
        "policy",
        "explain",
        "--workspace",
        "/w",
        "--",
        "terraform",
        "destroy",
        "-auto-approve",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("decision: ask") && out.contains("rule:     infra.destroy"),
        "{out}"
    );

    let (code, out, _) = guard(&[
        "policy",
        "explain",
        "--workspace",
        "/w",
        "--home",
        "/home/a",
        "--",
        "env",
        "FOO=1",
        "bash",
        "-c",
        "rm -rf ~/",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("fs.delete-outside-workspace") && out.contains("/home/a"),
        "{out}"
    );

    let (code, out, _) = guard(&[
        "policy",
        "explain",
        "--workspace",
        "/w",
        "--json",
        "--",
        "rm",
        "-rf",
        "node_modules",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("explain --json prints JSON");
    assert_eq!(v["verdict"]["decision"], "allow");
    assert_eq!(v["classification"]["findings"][0]["class"], "fs.delete");

    let (code, out, _) = guard(&[
        "policy",
        "explain",
        "--workspace",
        "/w",
        "--home",
        "/home/a",
        "--unlink",
        "/home/a/.ssh/id_rsa",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("files.ssh-keys"), "{out}");

    let (code, out, _) = guard(&["policy", "explain", "--connect", "169.254.169.254:80"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("net.cloud-metadata"), "{out}");

    let (code, _, err) = guard(&["policy", "explain", "--connect", "db:notaport"]);
    assert_eq!(code, 2);
    assert!(err.contains("port"), "{err}");
    let (code, _, err) = guard(&["policy", "explain"]);
    assert_eq!(code, 2);
    assert!(err.contains("name an action"), "{err}");
}

#[test]
fn lint_reports_file_line_column_and_test_reports_failures() {
    let dir = std::env::temp_dir().join(format!("guard-policy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "version: 1\nexec:\n  - id: x\n    classes: [infra.destroy]\n    decision: perhaps\n",
    )
    .unwrap();
    let (code, _, err) = guard(&["policy", "lint", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    let expected = format!("{}:5:15:", broken.display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("use one of the listed values"), "{err}");
    let (code, out, _) = guard(&["policy", "lint", "--json", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["error"]["line"].as_u64(), v["error"]["column"].as_u64()),
        (Some(5), Some(15))
    );

    let good = repo().join("policies/default.yaml");
    let (code, out, _) = guard(&["policy", "lint", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok ("), "{out}");

    let cases = dir.join("cases.yaml");
    std::fs::write(&cases, "workspace: /w\ncases:\n  - {cmd: 'terraform destroy', expect: ask, rule: infra.destroy}\n  - {cmd: 'terraform destroy', expect: allow}\n").unwrap();
    let (code, out, _) = guard(&[
        "policy",
        "test",
        good.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL case 2") && out.contains("1 passed, 1 failed"),
        "{out}"
    );
    let (code, _, _) = guard(&[
        "policy",
        "test",
        broken.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
