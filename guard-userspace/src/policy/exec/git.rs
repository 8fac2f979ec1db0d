//! git: pushes (force, +refspec, --mirror, --delete), and commands that throw
//! away work (reset --hard, clean -f, checkout -- ., restore, stash drop/clear,
//! branch -D, filter-branch/filter-repo).

use std::path::{Path, PathBuf};

use super::{
    Class, Invocation, Reader,
    args::{self, Spec},
    read_small_file,
};

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    if program != "git" {
        return false;
    }
    let global = args::parse(
        args,
        &Spec {
            short_values: "Cc",
            long_values: &[
                "git-dir",
                "work-tree",
                "namespace",
                "config-env",
                "super-prefix",
            ],
            stop_at_operand: true,
        },
    );
    let mut inv = inv.clone();
    for opt in &global.opts {
        if opt.name == "C"
            && let Some(dir) = &opt.value
        {
            inv.cwd = inv.cwd.join(dir);
        }
    }
    let rest = &args[global.rest_at..];
    let Some(sub) = rest.first() else { return true };
    let sub_args = &rest[1..];
    match sub.as_str() {
        "push" => push(reader, sub_args, &inv),
        "reset" if sub_args.iter().any(|a| a == "--hard") => {
            reader.finding(
                Class::GitDiscard,
                "git",
                "git reset --hard discards uncommitted changes".into(),
                &inv,
            );
        }
        "clean" => {
            let parsed = args::parse(
                sub_args,
                &Spec {
                    short_values: "eX",
                    long_values: &["exclude"],
                    ..Spec::default()
                },
            );
            let dry = parsed.has(Some('n'), &["dry-run"]);
            if !dry && parsed.has(Some('f'), &["force"]) {
                reader.finding(
                    Class::GitDiscard,
                    "git",
                    "git clean -f deletes untracked files".into(),
                    &inv,
                );
            }
        }
        "checkout" => {
            let dashdash = sub_args.iter().position(|a| a == "--");
            let parsed = args::parse(
                &sub_args[..dashdash.unwrap_or(sub_args.len())],
                &Spec {
                    short_values: "bB",
                    long_values: &["orphan", "conflict", "pathspec-from-file"],
                    ..Spec::default()
                },
            );
            let paths_after_dashdash = dashdash.is_some_and(|d| d + 1 < sub_args.len());
            let dot = parsed.operands.iter().any(|o| o == "." || o.contains('*'));
            if paths_after_dashdash || dot || parsed.has(Some('f'), &["force"]) {
                reader.finding(
                    Class::GitDiscard,
                    "git",
                    "git checkout of paths overwrites uncommitted changes".into(),
                    &inv,
                );
            }
        }
        "restore" => {
            let parsed = args::parse(
                sub_args,
                &Spec {
                    short_values: "s",
                    long_values: &["source", "pathspec-from-file"],
                    ..Spec::default()
                },
            );
            let staged_only =
                parsed.has(Some('S'), &["staged"]) && !parsed.has(Some('W'), &["worktree"]);
            if !staged_only && !parsed.operands.is_empty() {
                reader.finding(
                    Class::GitDiscard,
                    "git",
                    "git restore overwrites uncommitted changes".into(),
                    &inv,
                );
            }
        }
        "stash" => {
            if let Some(action @ ("drop" | "clear")) = sub_args.first().map(String::as_str) {
                reader.finding(
                    Class::GitStashDrop,
                    "git",
                    format!("git stash {action} deletes stashed work"),
                    &inv,
                );
            }
        }
        "branch" => {
            let parsed = args::parse(
                sub_args,
                &Spec {
                    short_values: "ut",
                    long_values: &[
                        "set-upstream-to",
                        "contains",
                        "merged",
                        "no-merged",
                        "points-at",
                        "format",
                        "sort",
                    ],
                    ..Spec::default()
                },
            );
            let force_delete = parsed.has(Some('D'), &[])
                || (parsed.has(Some('d'), &["delete"]) && parsed.has(Some('f'), &["force"]));
            if force_delete {
                let refs = parsed.operands.clone();
                reader.finding_refs(
                    Class::GitBranchForceDelete,
                    "git",
                    format!("git branch -D {}", refs.join(" ")),
                    refs,
                    &inv,
                );
            }
        }
        "update-ref" if sub_args.iter().any(|a| a == "-d") => {
            let refs: Vec<String> = sub_args
                .iter()
                .filter(|a| !a.starts_with('-'))
                .take(1)
                .map(|r| short_ref(r))
                .collect();
            reader.finding_refs(
                Class::GitBranchForceDelete,
                "git",
                "git update-ref -d deletes a ref".into(),
                refs,
                &inv,
            );
        }
        "filter-branch" | "filter-repo" => reader.finding(
            Class::GitHistoryRewrite,
            "git",
            format!("git {sub} rewrites history"),
            &inv,
        ),
        "reflog"
            if sub_args
                .first()
                .is_some_and(|a| a == "expire" || a == "delete") =>
        {
            reader.finding(
                Class::GitHistoryRewrite,
                "git",
                "git reflog expire drops the safety net of old commits".into(),
                &inv,
            );
        }
        _ => {}
    }
    true
}

fn push(reader: &mut Reader, args: &[String], inv: &Invocation) {
    let parsed = args::parse(
        args,
        &Spec {
            short_values: "o",
            long_values: &["repo", "receive-pack", "exec", "push-option"],
            ..Spec::default()
        },
    );
    if parsed.has(Some('n'), &["dry-run"]) {
        return;
    }
    let mut force = parsed.has(Some('f'), &["force"]);
    let lease = parsed.has(None, &["force-with-lease", "force-if-includes"]);
    let mirror = parsed.has(None, &["mirror"]);
    let mut delete = parsed.has(Some('d'), &["delete", "prune"]);
    let mut refs = Vec::new();
    let refspecs = parsed.operands.get(1..).unwrap_or(&[]);
    for spec in refspecs {
        let mut spec = spec.as_str();
        if let Some(rest) = spec.strip_prefix('+') {
            force = true;
            spec = rest;
        }
        let dst = match spec.split_once(':') {
            Some(("", dst)) => {
                delete = true;
                dst
            }
            Some((_, dst)) => dst,
            None => spec,
        };
        if dst == "HEAD" || dst.is_empty() {
            if let Some(branch) = current_branch(&inv.cwd) {
                refs.push(branch);
            }
        } else {
            refs.push(short_ref(dst));
        }
    }
    if refspecs.is_empty()
        && !parsed.has(None, &["all", "tags", "mirror", "branches"])
        && let Some(branch) = current_branch(&inv.cwd)
    {
        refs.push(branch);
    }
    let target = if refs.is_empty() {
        String::from("the remote")
    } else {
        refs.join(", ")
    };
    let (class, detail) = if mirror {
        (
            Class::GitPushMirror,
            format!("git push --mirror overwrites {target}"),
        )
    } else if delete {
        (Class::GitPushDelete, format!("git push deletes {target}"))
    } else if force {
        (
            Class::GitForcePush,
            format!("git push --force rewrites {target}"),
        )
    } else if lease {
        (
            Class::GitForcePushLease,
            format!("git push --force-with-lease rewrites {target}"),
        )
    } else {
        (Class::GitPush, format!("git push to {target}"))
    };
    reader.finding_refs(class, "git", detail, refs, inv);
}

fn short_ref(name: &str) -> String {
    name.strip_prefix("refs/heads/").unwrap_or(name).to_string()
}

/// The checked-out branch, read from `.git/HEAD` above `cwd` (worktrees too).
fn current_branch(cwd: &Path) -> Option<String> {
    let mut dir: Option<&Path> = Some(cwd);
    while let Some(d) = dir {
        let dot_git = d.join(".git");
        let git_dir: Option<PathBuf> = if dot_git.is_dir() {
            Some(dot_git)
        } else if dot_git.is_file() {
            let text = read_small_file(&dot_git)?;
            text.trim()
                .strip_prefix("gitdir:")
                .map(|p| d.join(p.trim()))
        } else {
            None
        };
        if let Some(git_dir) = git_dir {
            let head = read_small_file(&git_dir.join("HEAD"))?;
            return head
                .trim()
                .strip_prefix("ref: refs/heads/")
                .map(String::from);
        }
        dir = d.parent();
    }
    None
}
