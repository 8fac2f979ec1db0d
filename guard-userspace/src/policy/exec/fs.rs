//! Filesystem tools: rm, rmdir, unlink, shred, find -delete/-exec, rsync
//! --delete, dd of=, mkfs*, wipefs, truncate.

use super::{
    Class, Invocation, Reader, Target,
    args::{self, Spec},
};

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    match program {
        "rm" | "rmdir" | "unlink" | "rimraf" | "trash" | "gio" => {
            // rm's long options take values only as `--opt=value`.
            let parsed = args::parse(args, &Spec::default());
            let mut operands = parsed.operands.clone();
            if program == "gio" {
                // `gio remove`/`gio trash` only.
                if !matches!(
                    operands.first().map(String::as_str),
                    Some("remove" | "trash")
                ) {
                    return true;
                }
                operands.remove(0);
            }
            let recursive = parsed.has(Some('r'), &["recursive"]) || parsed.has(Some('R'), &[]);
            let targets = targets(reader, &operands, inv);
            if targets.is_empty() {
                return true;
            }
            let what = if recursive || program == "rimraf" {
                format!("{program} -r")
            } else {
                program.to_string()
            };
            let detail = format!("{what} of {}", describe(&targets));
            reader.finding_targets(Class::FsDelete, program, detail, targets, inv);
        }
        "shred" => {
            let spec = Spec {
                short_values: "ns",
                long_values: &["iterations", "size", "random-source", "remove"],
                ..Spec::default()
            };
            let parsed = args::parse(args, &spec);
            let targets = targets(reader, &parsed.operands, inv);
            let detail = format!("shred overwrites {}", describe(&targets));
            reader.finding_targets(Class::FsWipe, program, detail, targets, inv);
        }
        "find" => find(reader, args, inv),
        "rsync" => rsync(reader, args, inv),
        "dd" => {
            for arg in args {
                if let Some(out) = arg.strip_prefix("of=") {
                    let target = reader.target(out, inv);
                    let device = out.starts_with("/dev/") && out != "/dev/null";
                    let (class, detail) = if device {
                        (Class::FsWipe, format!("dd writes the raw device {out}"))
                    } else {
                        (Class::FsTruncate, format!("dd overwrites {out}"))
                    };
                    reader.finding_targets(class, program, detail, vec![target], inv);
                }
            }
        }
        "wipefs" | "mkswap" | "mke2fs" | "blkdiscard" | "sgdisk" => {
            if program == "sgdisk"
                && !args
                    .iter()
                    .any(|a| a.starts_with("--zap") || a == "-Z" || a == "-z" || a == "-o")
            {
                return true;
            }
            if program == "wipefs"
                && !args.iter().any(|a| {
                    a == "-a" || a == "--all" || a.starts_with("-o") || a.starts_with("--offset")
                })
            {
                // Without -a/-o wipefs only lists signatures.
                return true;
            }
            let operands: Vec<String> = args
                .iter()
                .filter(|a| !a.starts_with('-'))
                .cloned()
                .collect();
            let targets = targets(reader, &operands, inv);
            let detail = format!("{program} destroys the data on {}", describe(&targets));
            reader.finding_targets(Class::FsWipe, program, detail, targets, inv);
        }
        p if p.starts_with("mkfs") => {
            let spec = Spec {
                short_values: "tLbCgGiIjJlNoOrEUcmT",
                ..Spec::default()
            };
            let parsed = args::parse(args, &spec);
            let operands: Vec<String> = parsed.operands.into_iter().take(1).collect();
            let targets = targets(reader, &operands, inv);
            let detail = format!("{program} formats {}", describe(&targets));
            reader.finding_targets(Class::FsWipe, program, detail, targets, inv);
        }
        "truncate" => {
            let spec = Spec {
                short_values: "sr",
                long_values: &["size", "reference"],
                ..Spec::default()
            };
            let parsed = args::parse(args, &spec);
            let targets = targets(reader, &parsed.operands, inv);
            let detail = format!("truncate resizes {}", describe(&targets));
            reader.finding_targets(Class::FsTruncate, program, detail, targets, inv);
        }
        _ => return false,
    }
    true
}

fn targets(reader: &Reader, operands: &[String], inv: &Invocation) -> Vec<Target> {
    let mut out: Vec<Target> = operands.iter().map(|o| reader.target(o, inv)).collect();
    if let Some(paths) = &inv.stdin_operands
        && inv.unknown_operands
    {
        out.extend(paths.iter().map(|p| reader.target(p, inv)));
    } else if inv.unknown_operands {
        out.push(Target::Runtime("arguments read from stdin (xargs)".into()));
    }
    out
}

pub(crate) fn describe(targets: &[Target]) -> String {
    let names: Vec<String> = targets
        .iter()
        .take(3)
        .map(|t| match t {
            Target::Path(p) => p.display().to_string(),
            Target::Unknown(w) | Target::Runtime(w) => w.clone(),
        })
        .collect();
    let mut text = names.join(", ");
    if targets.len() > 3 {
        text.push_str(&format!(" and {} more", targets.len() - 3));
    }
    if text.is_empty() {
        text = "nothing named".into();
    }
    text
}

/// find's start paths come before the first expression word; `-delete` and
/// `-exec rm ...` act below them.
fn find(reader: &mut Reader, args: &[String], inv: &Invocation) {
    let mut i = 0;
    // Global options before paths.
    while let Some(arg) = args.get(i) {
        if matches!(arg.as_str(), "-H" | "-L" | "-P")
            || arg.starts_with("-O")
            || arg.starts_with("-D")
        {
            i += if arg == "-D" { 2 } else { 1 };
        } else {
            break;
        }
    }
    let mut starts = Vec::new();
    while let Some(arg) = args.get(i) {
        if arg.starts_with('-') || arg == "(" || arg == "!" {
            break;
        }
        starts.push(arg.clone());
        i += 1;
    }
    if starts.is_empty() {
        starts.push(".".into());
    }
    let expression = &args[i..];
    // With tests (-name, -type...) find deletes some entries below its start
    // paths; without, everything including the start paths.
    let filtered = expression.iter().any(|a| {
        matches!(
            a.as_str(),
            "-name"
                | "-iname"
                | "-path"
                | "-ipath"
                | "-wholename"
                | "-regex"
                | "-iregex"
                | "-type"
                | "-newer"
                | "-mtime"
                | "-mmin"
                | "-atime"
                | "-amin"
                | "-ctime"
                | "-cmin"
                | "-size"
                | "-empty"
                | "-user"
                | "-group"
                | "-perm"
                | "-links"
                | "-inum"
                | "-samefile"
        )
    });
    let below: Vec<String> = if filtered {
        starts
            .iter()
            .map(|s| format!("{}/{{found}}", s.trim_end_matches('/')))
            .collect()
    } else {
        starts.clone()
    };
    if expression.iter().any(|a| a == "-delete") {
        let targets = targets(reader, &below, inv);
        let detail = format!("find -delete below {}", describe(&targets));
        reader.finding_targets(Class::FsDelete, "find", detail, targets, inv);
    }
    let mut j = 0;
    while j < expression.len() {
        if matches!(
            expression[j].as_str(),
            "-exec" | "-execdir" | "-ok" | "-okdir"
        ) {
            let end = expression[j + 1..]
                .iter()
                .position(|a| a == ";" || a == "+")
                .map_or(expression.len(), |p| j + 1 + p);
            let command = &expression[j + 1..end];
            for start in &starts {
                let found = format!("{}/{{found}}", start.trim_end_matches('/'));
                let words: Vec<String> = command.iter().map(|w| w.replace("{}", &found)).collect();
                let mut next = inv.clone();
                next.via.push("find -exec".into());
                next.depth += 1;
                reader.command(&words, &next);
            }
            j = end;
        }
        j += 1;
    }
}

fn rsync(reader: &mut Reader, args: &[String], inv: &Invocation) {
    let spec = Spec {
        short_values: "eBfT",
        long_values: &[
            "rsh",
            "rsync-path",
            "filter",
            "exclude",
            "include",
            "exclude-from",
            "include-from",
            "files-from",
            "backup-dir",
            "suffix",
            "temp-dir",
            "compare-dest",
            "copy-dest",
            "link-dest",
            "chmod",
            "chown",
            "log-file",
            "password-file",
            "port",
            "timeout",
            "bwlimit",
            "max-delete",
            "max-size",
            "min-size",
        ],
        stop_at_operand: false,
    };
    let parsed = args::parse(args, &spec);
    if parsed.has(Some('n'), &["dry-run"]) {
        return;
    }
    let deletes = parsed
        .opts
        .iter()
        .any(|o| o.long && (o.name == "del" || o.name.starts_with("delete")));
    let removes_source = parsed.has(None, &["remove-source-files"]);
    if parsed.operands.len() < 2 {
        return;
    }
    let (sources, dest) = parsed.operands.split_at(parsed.operands.len() - 1);
    if deletes {
        let targets = targets(reader, dest, inv);
        let detail = format!(
            "rsync --delete removes files in {} missing from the source",
            describe(&targets)
        );
        reader.finding_targets(Class::FsDelete, "rsync", detail, targets, inv);
    }
    if removes_source {
        let targets = targets(reader, sources, inv);
        let detail = format!("rsync --remove-source-files deletes {}", describe(&targets));
        reader.finding_targets(Class::FsDelete, "rsync", detail, targets, inv);
    }
}
