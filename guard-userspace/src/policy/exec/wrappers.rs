//! Programs that run another program: sudo, env, nice, timeout, xargs, shells
//! with `-c`, package runners (npx, bundle exec), remote shells (ssh, kubectl
//! exec). Each is parsed by its own option grammar, then the inner command is
//! read as if it had been exec'd directly.

use super::{
    Invocation, Reader,
    args::{self, Spec},
    assignment, shell,
};

pub const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "rbash",
];

pub fn is_shell(program: &str) -> bool {
    SHELLS.contains(&program)
}

/// Programs that run another program given in their arguments.
pub const WRAPPERS: &[&str] = &[
    "sudo",
    "doas",
    "env",
    "nice",
    "ionice",
    "nohup",
    "timeout",
    "xargs",
    "command",
    "exec",
    "time",
    "stdbuf",
    "setsid",
    "chroot",
    "flock",
    "watch",
    "busybox",
    "npx",
    "bunx",
    "pnpx",
    "pnpm",
    "yarn",
    "bundle",
    "uv",
    "uvx",
    "poetry",
    "pipenv",
    "eval",
    "source",
    ".",
    "su",
    "script",
    "ssh",
    "ld.so",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux.so.2",
];

pub fn is_wrapper(program: &str) -> bool {
    WRAPPERS.contains(&program) || is_loader(program)
}

fn is_loader(program: &str) -> bool {
    program.starts_with("ld-linux") || program == "ld.so" || program.starts_with("ld64.so")
}

/// Unwraps `program args`; true if it was a wrapper (handled here).
pub fn unwrap(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    if is_shell(program) {
        shell_program(reader, program, args, inv);
        return true;
    }
    if is_loader(program) {
        let spec = Spec {
            long_values: &["library-path", "preload", "argv0", "audit"],
            stop_at_operand: true,
            ..Spec::default()
        };
        let parsed = args::parse(args, &spec);
        if parsed.has(None, &["list", "verify"]) {
            return true;
        }
        inner(reader, program, &args[parsed.rest_at..], inv.clone());
        return true;
    }
    match program {
        "sudo" | "doas" => {
            let spec = Spec {
                short_values: "ugUpCDhrtTRa",
                long_values: &[
                    "user",
                    "group",
                    "other-user",
                    "prompt",
                    "close-from",
                    "chdir",
                    "host",
                    "role",
                    "type",
                    "command-timeout",
                    "chroot",
                    "auth-type",
                ],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            // -e edits files, -l lists, -v/-k touch credentials: nothing runs.
            if parsed.has(Some('e'), &["edit", "list", "validate"])
                || parsed.has(Some('l'), &[])
                || parsed.has(Some('v'), &[])
            {
                return true;
            }
            let mut next = inv.clone();
            if let Some(dir) = parsed.value(Some('D'), &["chdir"]) {
                next.cwd = next.cwd.join(dir);
            }
            let rest = &args[parsed.rest_at..];
            if rest.is_empty() && parsed.has(Some('s'), &["shell"]) {
                return true;
            }
            inner(reader, program, rest, next);
        }
        "su" => {
            let spec = Spec {
                short_values: "cgGsw",
                long_values: &[
                    "command",
                    "group",
                    "supp-group",
                    "shell",
                    "whitelist-environment",
                ],
                stop_at_operand: false,
            };
            let parsed = args::parse(args, &spec);
            if let Some(command) = parsed.value(Some('c'), &["command"]) {
                reader.script(command, inv, "su -c".into());
            }
        }
        "env" => {
            let spec = Spec {
                short_values: "uCS",
                long_values: &[
                    "unset",
                    "chdir",
                    "split-string",
                    "block-signal",
                    "default-signal",
                    "ignore-signal",
                ],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            let mut next = inv.clone();
            if let Some(dir) = parsed.value(Some('C'), &["chdir"]) {
                next.cwd = next.cwd.join(dir);
            }
            let mut rest: Vec<String> = args[parsed.rest_at..].to_vec();
            if let Some(split) = parsed.value(Some('S'), &["split-string"]) {
                // -S splits one string into words (a shebang helper).
                let mut words: Vec<String> = split.split_whitespace().map(String::from).collect();
                words.extend(rest);
                rest = words;
            }
            let mut start = 0;
            while let Some((k, v)) = rest.get(start).and_then(|w| assignment(w)) {
                next.env.push((k.to_string(), v.to_string()));
                start += 1;
            }
            inner(reader, program, &rest[start..], next);
        }
        "nice" => skip_options(reader, program, args, inv, "n", &["adjustment"]),
        "ionice" => skip_options(
            reader,
            program,
            args,
            inv,
            "cnp",
            &["class", "classdata", "pid", "pgid", "uid"],
        ),
        "command" => {
            let parsed = args::parse(
                args,
                &Spec {
                    stop_at_operand: true,
                    ..Spec::default()
                },
            );
            if parsed.has(Some('v'), &[]) || parsed.has(Some('V'), &[]) {
                return true;
            }
            inner(reader, program, &args[parsed.rest_at..], inv.clone());
        }
        "nohup" | "setsid" => skip_options(reader, program, args, inv, "", &[]),
        "exec" => skip_options(reader, program, args, inv, "a", &[]),
        "script" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "cEOIBTmt",
                    long_values: &[
                        "command",
                        "echo",
                        "log-out",
                        "log-in",
                        "log-io",
                        "log-timing",
                        "logging-format",
                        "timing",
                    ],
                    stop_at_operand: false,
                },
            );
            if let Some(command) = parsed.value(Some('c'), &["command"]) {
                reader.script(command, inv, "script -c".into());
            }
        }
        "time" => skip_options(reader, program, args, inv, "fo", &["format", "output"]),
        "stdbuf" => skip_options(
            reader,
            program,
            args,
            inv,
            "ioe",
            &["input", "output", "error"],
        ),
        "timeout" => {
            let spec = Spec {
                short_values: "sk",
                long_values: &["signal", "kill-after"],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            // The first operand is the duration.
            let rest = args.get(parsed.rest_at + 1..).unwrap_or(&[]);
            inner(reader, program, rest, inv.clone());
        }
        "chroot" => {
            let spec = Spec {
                long_values: &["userspec", "groups"],
                stop_at_operand: true,
                ..Spec::default()
            };
            let parsed = args::parse(args, &spec);
            let mut next = inv.clone();
            // Paths inside the chroot are not the paths we know.
            next.remote = true;
            let rest = args.get(parsed.rest_at + 1..).unwrap_or(&[]);
            inner(reader, program, rest, next);
        }
        "flock" => {
            let spec = Spec {
                short_values: "wEc",
                long_values: &["timeout", "conflict-exit-code", "command"],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            if let Some(command) = parsed.value(Some('c'), &["command"]) {
                reader.script(command, inv, "flock -c".into());
                return true;
            }
            let rest = args.get(parsed.rest_at + 1..).unwrap_or(&[]);
            inner(reader, program, rest, inv.clone());
        }
        "watch" => {
            let spec = Spec {
                short_values: "nd",
                long_values: &["interval", "differences"],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            let rest = args[parsed.rest_at..].join(" ");
            reader.script(&rest, inv, "watch".into());
        }
        "xargs" => {
            let spec = Spec {
                short_values: "adEIiLlnPs",
                long_values: &[
                    "arg-file",
                    "delimiter",
                    "eof",
                    "replace",
                    "max-lines",
                    "max-args",
                    "max-procs",
                    "max-chars",
                    "process-slot-var",
                ],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            let mut next = inv.clone();
            next.unknown_operands = true;
            let rest = &args[parsed.rest_at..];
            if rest.is_empty() {
                // xargs runs echo by default.
                return true;
            }
            inner(reader, program, rest, next);
        }
        "busybox" => inner(reader, program, args, inv.clone()),
        "ssh" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "bcDEeFIiJLlmOoPpQRSWw",
                    stop_at_operand: true,
                    ..Spec::default()
                },
            );
            // ssh [OPTIONS] HOST [COMMAND...]
            if let Some(command) = args.get(parsed.rest_at + 1..) {
                remote_shell(reader, "ssh", command, inv);
            }
        }
        "eval" => reader.script(&args.join(" "), inv, "eval".into()),
        // Sourced files run their commands as execs of their own.
        "source" | "." => {}
        "npx" | "bunx" | "pnpx" => {
            let spec = Spec {
                short_values: "pc",
                long_values: &["package", "call", "registry", "cache", "userconfig"],
                stop_at_operand: true,
            };
            let parsed = args::parse(args, &spec);
            if let Some(call) = parsed.value(Some('c'), &["call"]) {
                reader.script(call, inv, format!("{program} -c"));
                return true;
            }
            inner(reader, program, &args[parsed.rest_at..], inv.clone());
        }
        "pnpm" | "yarn" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "C",
                    long_values: &["dir", "filter", "cwd"],
                    stop_at_operand: true,
                },
            );
            let rest = &args[parsed.rest_at..];
            match rest.first().map(String::as_str) {
                Some("exec" | "dlx" | "x") => inner(reader, program, &rest[1..], inv.clone()),
                // `pnpm prisma migrate reset` runs the package's binary.
                Some(tool) if RUNNABLE_BINS.contains(&tool) => {
                    inner(reader, program, rest, inv.clone())
                }
                Some("npm") if program == "yarn" => {
                    super::paas::read(reader, "npm", &rest[1..], inv);
                }
                _ => {
                    super::paas::read(reader, "npm", rest, inv);
                }
            }
        }
        "bundle" | "poetry" | "pipenv" | "uv" => {
            let parsed = args::parse(
                args,
                &Spec {
                    stop_at_operand: true,
                    long_values: &["directory", "project", "python", "with", "gemfile"],
                    ..Spec::default()
                },
            );
            let rest = &args[parsed.rest_at..];
            if matches!(rest.first().map(String::as_str), Some("exec" | "run")) {
                let run = args::parse(
                    &rest[1..],
                    &Spec {
                        stop_at_operand: true,
                        long_values: &[
                            "with",
                            "python",
                            "env-file",
                            "package",
                            "directory",
                            "project",
                        ],
                        ..Spec::default()
                    },
                );
                inner(reader, program, &rest[1 + run.rest_at..], inv.clone());
            }
        }
        "uvx" => {
            let parsed = args::parse(
                args,
                &Spec {
                    stop_at_operand: true,
                    long_values: &["from", "with", "python"],
                    ..Spec::default()
                },
            );
            inner(reader, program, &args[parsed.rest_at..], inv.clone());
        }
        _ => return false,
    }
    true
}

/// Package binaries agents run through `pnpm X`/`yarn X`.
const RUNNABLE_BINS: &[&str] = &[
    "prisma",
    "supabase",
    "drizzle-kit",
    "cdk",
    "rails",
    "wrangler",
    "vercel",
    "netlify",
    "rimraf",
];

fn skip_options(
    reader: &mut Reader,
    program: &str,
    args: &[String],
    inv: &Invocation,
    short_values: &'static str,
    long_values: &'static [&'static str],
) {
    let spec = Spec {
        short_values,
        long_values,
        stop_at_operand: true,
    };
    let parsed = args::parse(args, &spec);
    inner(reader, program, &args[parsed.rest_at..], inv.clone());
}

fn inner(reader: &mut Reader, via: &str, rest: &[String], mut inv: Invocation) {
    inv.via.push(via.to_string());
    inv.depth += 1;
    reader.command(rest, &inv);
}

fn shell_program(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) {
    // Shell options: -c takes the script as the first operand; -o/+o take a name.
    let mut i = 0;
    let mut command_mode = false;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        if arg == "-o"
            || arg == "+o"
            || arg == "-O"
            || arg == "+O"
            || arg == "--rcfile"
            || arg == "--init-file"
        {
            i += 2;
            continue;
        }
        if arg.starts_with("--") {
            i += 1;
            continue;
        }
        if (arg.starts_with('-') || arg.starts_with('+')) && arg.len() > 1 {
            if arg[1..].contains('c') {
                command_mode = true;
            }
            i += 1;
            continue;
        }
        break;
    }
    let rest = args.get(i..).unwrap_or(&[]);
    if command_mode {
        if let Some(script) = rest.first() {
            reader.script(script, inv, format!("{program} -c"));
        }
        return;
    }
    // `bash script.sh` is not read: every program the script runs is exec'd
    // and classified on its own, with its real cwd, and reading build scripts
    // (./configure) from here would only guess at their variables.
    if rest.is_empty()
        && let shell::Stdin::Text(text) = &inv.stdin
    {
        // `echo "rm -rf ~" | sh`, `sh <<EOF`: the script is the input.
        let text = text.clone();
        reader.script(&text, inv, format!("{program} <stdin>"));
    }
}

/// `ssh host command...`: the command runs remotely.
pub fn remote_shell(reader: &mut Reader, program: &str, words: &[String], inv: &Invocation) {
    if words.is_empty() {
        return;
    }
    let mut next = inv.clone();
    next.remote = true;
    let script = words.join(" ");
    reader.script(&script, &next, program.to_string());
}
