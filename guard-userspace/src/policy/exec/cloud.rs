//! Cloud CLIs: aws, gcloud, gsutil, az, doctl, hcloud. Their command trees end
//! in a verb; delete-like verbs (delete, terminate, remove, rb, purge) are
//! reported. aws s3 rm/rb and sync --delete are special-cased.

use super::{Class, Invocation, Reader};

/// Options of these CLIs that take a separate value (so it is not read as a verb).
const VALUE_OPTIONS: &[&str] = &[
    "--region",
    "--profile",
    "--output",
    "--endpoint-url",
    "--query",
    "--project",
    "--zone",
    "--subscription",
    "--resource-group",
    "-g",
    "-n",
    "--name",
    "--format",
    "--account",
    "--configuration",
    "--context",
    "-o",
    "--cli-input-json",
    "--bucket",
    "--key",
];

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    if !matches!(
        program,
        "aws" | "gcloud" | "gsutil" | "az" | "doctl" | "hcloud"
    ) {
        return false;
    }
    if program == "aws" && super::dry_run(args) {
        return true;
    }
    let words = command_words(args);
    let verb = match program {
        "aws" => {
            let service = words.first().map(String::as_str).unwrap_or("");
            let op = words.get(1).map(String::as_str).unwrap_or("");
            if service == "s3" {
                match op {
                    "rm" | "rb" => Some(format!("aws s3 {op}")),
                    "sync" if args.iter().any(|a| a == "--delete") => {
                        Some("aws s3 sync --delete".into())
                    }
                    _ => None,
                }
            } else if [
                "delete-",
                "terminate-",
                "remove-",
                "deregister-",
                "purge-",
                "destroy-",
                "reset-",
            ]
            .iter()
            .any(|p| op.starts_with(p))
            {
                Some(format!("aws {service} {op}"))
            } else {
                None
            }
        }
        "gsutil" => {
            let op = words.first().map(String::as_str).unwrap_or("");
            let sync_delete = op == "rsync"
                && args.iter().any(|a| {
                    a == "-d" || (a.starts_with('-') && a.contains('d') && !a.starts_with("--"))
                });
            (matches!(op, "rm" | "rb") || sync_delete).then(|| format!("gsutil {op}"))
        }
        _ => words
            .iter()
            .position(|w| {
                matches!(
                    w.as_str(),
                    "delete" | "destroy" | "purge" | "rm" | "rb" | "remove" | "terminate"
                )
            })
            .map(|i| format!("{program} {}", words[..=i].join(" "))),
    };
    if let Some(verb) = verb {
        reader.finding(
            Class::CloudDelete,
            program,
            format!("{verb} deletes cloud resources"),
            inv,
        );
    }
    true
}

/// Positional words, skipping options and their values.
fn command_words(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg.starts_with('-') {
            if !arg.contains('=') && VALUE_OPTIONS.contains(&arg.as_str()) {
                i += 1;
            }
        } else {
            out.push(arg.clone());
        }
        i += 1;
    }
    out
}
