//! Classifier tests: each one would fail if the unwrapping it names broke.

use std::{ffi::OsString, path::Path};

use super::*;

fn run(argv: &[&str]) -> Classification {
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    classify(&argv, Path::new(""), Path::new("/ws"), Path::new("/home/u"))
}

fn classes(argv: &[&str]) -> Vec<Class> {
    run(argv).findings.into_iter().map(|f| f.class).collect()
}

fn targets(argv: &[&str]) -> Vec<Target> {
    run(argv)
        .findings
        .into_iter()
        .flat_map(|f| f.targets)
        .collect()
}

fn path(p: &str) -> Target {
    Target::Path(p.into())
}

#[test]
fn rm_targets_resolve_against_cwd_and_home() {
    assert!(matches!(
        targets(&["rm", "-rf", "~bob/x"])[0],
        Target::Unknown(_)
    ));
    assert_eq!(
        targets(&["rm", "-rf", "node_modules", "../x"]),
        vec![path("/ws/node_modules"), path("/x")]
    );
    assert_eq!(
        targets(&["rm", "-r", "-f", "--", "~/", "-weird"]),
        vec![path("/home/u"), path("/ws/-weird")]
    );
    assert_eq!(
        targets(&["rm", "-rf", "$HOME/.ssh"]),
        vec![path("/home/u/.ssh")]
    );
    assert_eq!(targets(&["rm", "-rf", "/*"]), vec![path("/")]);
    assert_eq!(targets(&["rm", "-f", "*.o"]), vec![path("/ws/*.o")]);
    assert!(matches!(
        targets(&["rm", "-rf", "$TARGET"])[0],
        Target::Runtime(_)
    ));
}

#[test]
fn wrappers_env_prefixes_and_shell_strings_unwrap() {
    for argv in [
        &["env", "FOO=1", "bash", "-c", "rm -rf ~/"][..],
        &["sudo", "-u", "root", "-E", "rm", "-rf", "/home/u"],
        &[
            "timeout", "-s", "KILL", "10", "nice", "-n", "5", "nohup", "rm", "-rf", "/home/u",
        ],
        &["bash", "-lc", "cd /tmp && FOO=1 command rm -rf ~"],
        &["sh", "-c", "echo $(rm -rf ~)"],
        &["/lib64/ld-linux-x86-64.so.2", "/bin/rm", "-rf", "/home/u"],
        &["busybox", "rm", "-rf", "/home/u"],
        &["xargs", "-0", "rm", "-rf"],
        &["exec", "-a", "x", "rm", "-rf", "/home/u"],
    ] {
        assert!(
            classes(argv).contains(&Class::FsDelete),
            "{argv:?} not caught: {:?}",
            run(argv)
        );
    }
    let found = run(&["env", "FOO=1", "bash", "-c", "rm -rf ~/"]);
    assert_eq!(found.findings[0].via, vec!["env", "bash -c"]);
    assert_eq!(found.findings[0].targets, vec![path("/home/u")]);
    assert!(classes(&["command", "-v", "rm"]).is_empty());
}

#[test]
fn inline_code_is_classed_and_shell_literals_are_read() {
    assert_eq!(
        classes(&["python3", "-c", "print(1)"]),
        vec![Class::CodeInline]
    );
    assert_eq!(
        classes(&[
            "python3.12",
            "-c",
            "import shutil; shutil.rmtree('/home/u')"
        ]),
        vec![Class::CodeInline, Class::CodeInlineDelete]
    );
    assert!(
        classes(&[
            "node",
            "-e",
            "require('child_process').execSync('terraform destroy -auto-approve')"
        ])
        .contains(&Class::InfraDestroy)
    );
    assert_eq!(classes(&["perl", "-lne", "print"]), vec![Class::CodeInline]);
    assert!(classes(&["python", "script.py", "-c", "x"]).is_empty());
}

#[test]
fn git_reads_refspecs_and_flags() {
    assert_eq!(
        classes(&["git", "push", "-f", "origin", "main"]),
        vec![Class::GitForcePush]
    );
    assert_eq!(
        classes(&["git", "push", "origin", "+main"]),
        vec![Class::GitForcePush]
    );
    assert_eq!(
        classes(&["git", "push", "origin", ":old"]),
        vec![Class::GitPushDelete]
    );
    assert_eq!(
        classes(&["git", "-C", "/x", "push", "--mirror"]),
        vec![Class::GitPushMirror]
    );
    let push = run(&["git", "push", "origin", "feature/x"]);
    assert_eq!(push.findings[0].class, Class::GitPush);
    assert_eq!(push.findings[0].refs, vec!["feature/x"]);
    assert_eq!(classes(&["git", "clean", "-fdx"]), vec![Class::GitDiscard]);
    assert!(classes(&["git", "clean", "-nd"]).is_empty());
    assert_eq!(
        classes(&["git", "checkout", "--", "."]),
        vec![Class::GitDiscard]
    );
    assert!(classes(&["git", "checkout", "-b", "feature"]).is_empty());
    assert!(classes(&["git", "restore", "--staged", "x"]).is_empty());
    assert_eq!(
        classes(&["git", "branch", "-D", "x"]),
        vec![Class::GitBranchForceDelete]
    );
    assert!(classes(&["git", "branch", "-d", "x"]).is_empty());
}

#[test]
fn databases_read_sql_from_argv_heredocs_and_files() {
    assert_eq!(
        classes(&["psql", "-h", "db", "-c", "DROP TABLE users"]),
        vec![Class::DbDrop]
    );
    assert!(classes(&["psql", "-c", "SELECT * FROM users"]).is_empty());
    assert_eq!(
        classes(&["bash", "-c", "psql prod <<EOF\ntruncate orders;\nEOF"]),
        vec![Class::DbTruncate]
    );
    assert_eq!(
        classes(&["mysql", "-uroot", "-e", "DELETE FROM t"]),
        vec![Class::DbDeleteAll]
    );
    assert_eq!(
        classes(&["redis-cli", "-h", "cache", "FLUSHALL"]),
        vec![Class::DbFlush]
    );
    assert_eq!(
        classes(&["sqlite3", "app.sqlite3", "DROP TABLE x"]),
        vec![Class::DbDrop]
    );
    assert_eq!(
        classes(&["mongosh", "--eval", "db.dropDatabase()"]),
        vec![Class::DbDrop]
    );
    let dir = std::env::temp_dir().join(format!("guard-sql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.sql"), "drop database prod;").unwrap();
    let argv: Vec<OsString> = ["psql", "-f", "x.sql"].iter().map(OsString::from).collect();
    let found = classify(&argv, Path::new(""), &dir, Path::new("/home/u"));
    assert_eq!(found.findings[0].class, Class::DbDrop, "{found:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn infrastructure_and_platform_tools() {
    assert_eq!(
        classes(&["terraform", "destroy", "-auto-approve"]),
        vec![Class::InfraDestroy]
    );
    assert_eq!(
        classes(&["terraform", "-chdir=infra", "apply", "-auto-approve"]),
        vec![Class::InfraAutoApprove]
    );
    assert!(classes(&["terraform", "plan", "-destroy"]).is_empty());
    assert_eq!(
        classes(&["kubectl", "-n", "prod", "delete", "pod", "x"]),
        vec![Class::K8sDelete]
    );
    assert!(classes(&["kubectl", "get", "pods"]).is_empty());
    assert_eq!(
        classes(&["docker", "compose", "down", "-v"]),
        vec![Class::ContainerVolumeDelete]
    );
    assert!(classes(&["docker", "compose", "down"]).is_empty());
    assert_eq!(
        classes(&["aws", "--region", "us-east-1", "rds", "delete-db-instance"]),
        vec![Class::CloudDelete]
    );
    assert!(classes(&["aws", "s3", "ls"]).is_empty());
    assert_eq!(
        classes(&["npx", "prisma", "migrate", "reset", "--force"]),
        vec![Class::PaasDbReset]
    );
    assert!(classes(&["rails", "db:drop"]).is_empty());
    assert_eq!(
        classes(&[
            "env",
            "RAILS_ENV=production",
            "bundle",
            "exec",
            "rails",
            "db:drop"
        ]),
        vec![Class::PaasDbReset]
    );
    assert_eq!(
        classes(&["curl", "-XDELETE", "https://api/x"]),
        vec![Class::HttpDelete]
    );
    assert_eq!(
        classes(&[
            "curl",
            "-d",
            "{\"query\":\"mutation { volumeDelete(id: 1) }\"}",
            "https://api/graphql"
        ]),
        vec![Class::HttpMutation]
    );
    assert!(classes(&["curl", "-fsSL", "https://example.com"]).is_empty());
    assert_eq!(
        classes(&["ssh", "-p", "22", "prod", "rm", "-rf", "/data"]),
        vec![Class::FsDelete]
    );
}

#[test]
fn bad_input_never_panics() {
    for argv in [
        &[][..],
        &["bash", "-c"],
        &["bash", "-c", "echo 'unterminated"],
        &["git"],
        &["rm"],
        &["find"],
        &["curl", "-X"],
        &["sudo"],
        &["env", "-S"],
        &["timeout"],
        &["python", "-c"],
    ] {
        let _ = run(argv);
    }
    assert_eq!(
        classes(&["bash", "-c", "echo 'x"]),
        vec![Class::ShellUnparsed]
    );
    let deep = "bash -c \"".repeat(30);
    let _ = run(&["bash", "-c", &deep]);
    let padded = format!("{}rm -rf /home/u", "true; ".repeat(600));
    assert!(classes(&["bash", "-c", &padded]).contains(&Class::ShellUnparsed));
}

#[test]
fn pipelines_feed_text_and_paths_to_the_next_command() {
    assert_eq!(
        classes(&["bash", "-c", "echo 'DROP TABLE users' | psql prod"]),
        vec![Class::DbDrop]
    );
    assert_eq!(
        classes(&["sh", "-c", "printf 'FLUSHALL' | redis-cli"]),
        vec![Class::DbFlush]
    );
    let found = run(&["bash", "-c", "echo 'rm -rf ~' | sh"]);
    let found: Vec<Class> = found.findings.iter().map(|f| f.class).collect();
    assert!(
        found.contains(&Class::ShellStdinScript) && found.contains(&Class::FsDelete),
        "{found:?}"
    );
    // find | xargs rm: the targets are below find's start paths.
    assert_eq!(
        targets(&[
            "bash",
            "-c",
            "find . -name '*.tmp' -print0 | xargs -0 rm -f"
        ]),
        vec![path("/ws/{found}")]
    );
    assert_eq!(
        targets(&["bash", "-c", "find ~ -name '*.tmp' | xargs rm -f"]),
        vec![path("/home/u/{found}")]
    );
    assert!(matches!(
        targets(&["bash", "-c", "ls | xargs rm -f"])[0],
        Target::Runtime(_)
    ));
}

#[test]
fn git_push_without_refspec_uses_the_checked_out_branch() {
    let dir = std::env::temp_dir().join(format!("guard-git-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let argv: Vec<OsString> = ["git", "push"].iter().map(OsString::from).collect();
    let found = classify(&argv, Path::new(""), &dir.join("sub"), Path::new("/h"));
    assert_eq!(found.findings[0].refs, vec!["main"], "{found:?}");
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/feature/x\n").unwrap();
    let argv: Vec<OsString> = ["git", "push", "origin", "HEAD"]
        .iter()
        .map(OsString::from)
        .collect();
    let found = classify(&argv, Path::new(""), &dir, Path::new("/h"));
    assert_eq!(found.findings[0].refs, vec!["feature/x"], "{found:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scripts_follow_cd_and_variables() {
    assert_eq!(
        targets(&["sh", "-c", "cd .. && rm -rf project"]),
        vec![path("/project")]
    );
    assert_eq!(
        targets(&["sh", "-c", "cd /srv; rm -rf data"]),
        vec![path("/srv/data")]
    );
    assert_eq!(
        targets(&["sh", "-c", "cd && rm -rf x"]),
        vec![path("/home/u/x")]
    );
    assert!(matches!(
        targets(&["sh", "-c", "cd $DIR && rm -rf x"])[0],
        Target::Runtime(_)
    ));
    assert_eq!(
        targets(&["bash", "-c", "for f in *.log tmp; do rm -f $f; done"]),
        vec![path("/ws/*.log"), path("/ws/tmp")]
    );
    assert_eq!(
        targets(&["bash", "-c", "D=/etc; rm -rf $D/nginx"]),
        vec![path("/etc/nginx")]
    );
    assert_eq!(
        targets(&["bash", "-c", "export OUT=build && rm -rf \"${OUT}\""]),
        vec![path("/ws/build")]
    );
}

#[test]
fn named_files_are_read_without_blocking() {
    let dir = std::env::temp_dir().join(format!("guard-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("drop.sql");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    assert!(read_small_file(&fifo).is_none());
    assert!(read_small_file(Path::new("/proc/kmsg")).is_none());
    assert!(read_small_file(Path::new("/proc/self/../self/status")).is_none());
    let argv: Vec<OsString> = ["psql", "-f", "drop.sql"]
        .iter()
        .map(OsString::from)
        .collect();
    let _ = classify(&argv, Path::new(""), &dir, Path::new("/h"));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn well_known_variables_resolve() {
    assert_eq!(
        targets(&["rm", "-rf", "$(pwd)/build"]),
        vec![path("/ws/build")]
    );
    assert_eq!(targets(&["rm", "-rf", "${PWD}/../x"]), vec![path("/x")]);
    assert_eq!(
        targets(&["rm", "-rf", "$TMPDIR/foo"]),
        vec![path("/tmp/foo")]
    );
    assert_eq!(
        targets(&["bash", "-c", "D=$(mktemp -d); rm -rf $D"]),
        vec![path("/tmp/{mktemp}")]
    );
    assert!(matches!(
        targets(&["rm", "-rf", "$OTHER/x"])[0],
        Target::Runtime(_)
    ));
}

#[test]
fn rm_long_options_do_not_swallow_operands() {
    assert_eq!(
        targets(&["rm", "--interactive", "/home/u/x"]),
        vec![path("/home/u/x")]
    );
    assert_eq!(
        targets(&["rm", "-r", "--preserve-root=all", "/"]),
        vec![path("/")]
    );
}

#[test]
fn inline_code_argv_lists_are_read_as_commands() {
    for argv in [
        &[
            "python3",
            "-c",
            "import subprocess; subprocess.run(['rm', '-rf', '/home/u'])",
        ][..],
        &[
            "node",
            "-e",
            "require('child_process').spawnSync('rm', ['-rf', '/home/u'])",
        ],
        &["ruby", "-e", "system('rm', '-rf', '/home/u')"],
        &["perl", "-e", "system(\"rm -rf /home/u\")"],
        &["ruby", "-e", "`rm -rf /home/u`"],
    ] {
        assert_eq!(
            targets(argv),
            vec![path("/home/u")],
            "{argv:?}: {:?}",
            run(argv)
        );
    }
}

#[test]
fn dry_runs_are_not_destructive() {
    assert!(classes(&["kubectl", "delete", "ns", "prod", "--dry-run=client"]).is_empty());
    assert_eq!(
        classes(&["kubectl", "delete", "ns", "prod", "--dry-run=none"]),
        vec![Class::K8sDelete]
    );
    assert!(classes(&["git", "push", "-n", "--force"]).is_empty());
    assert!(classes(&["rsync", "-avn", "--delete", "a/", "/srv/b/"]).is_empty());
    assert!(classes(&["aws", "s3", "rm", "s3://b", "--recursive", "--dryrun"]).is_empty());
    assert!(classes(&["helm", "uninstall", "api", "--dry-run"]).is_empty());
    assert_eq!(
        classes(&[
            "gh",
            "api",
            "graphql",
            "-f",
            "query=mutation { deleteRepository(input: {}) { clientMutationId } }"
        ]),
        vec![Class::HttpMutation]
    );
}
