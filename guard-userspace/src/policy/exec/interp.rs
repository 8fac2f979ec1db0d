//! Interpreters running inline code (`python -c`, `node -e`, `perl -e`,
//! `ruby -e`): classed as inline code. guard does not try to understand the
//! program; it looks for well-known deletion calls and for shell commands
//! passed as string literals to system()/subprocess, and leaves the rest to
//! the file and network hooks.

use super::{Class, Invocation, Reader, strip_version};

/// Interpreters whose inline code is classed (base names, versions stripped).
pub const INTERPRETERS: &[&str] = &[
    "python",
    "pypy",
    "node",
    "nodejs",
    "bun",
    "deno",
    "perl",
    "ruby",
    "php",
    "lua",
    "luajit",
    "osascript",
    "Rscript",
    "R",
    "pwsh",
    "powershell",
    "tclsh",
];

pub fn is_interpreter(base: &str) -> bool {
    INTERPRETERS.contains(&base)
}

/// Reads `program args` if it is an interpreter; true if handled.
pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    let base = strip_version(program);
    if !is_interpreter(&base) {
        return false;
    }
    let code = match base.as_str() {
        "python" | "pypy" => {
            django_manage(reader, program, args, inv);
            short_code(args, &['c'], &["WXmQ"], &["--command"])
        }
        "node" | "nodejs" | "bun" => short_code(args, &['e', 'p'], &["r"], &["--eval", "--print"]),
        "deno" => match args.first().map(String::as_str) {
            Some("eval") => args.get(1).cloned(),
            _ => None,
        },
        "perl" => short_code(args, &['e', 'E'], &["IMmx"], &[]),
        "ruby" => short_code(args, &['e'], &["IrCEx"], &[]),
        "php" => short_code(args, &['r'], &["dcf"], &[]),
        "lua" | "luajit" | "osascript" | "R" | "Rscript" | "tclsh" => {
            short_code(args, &['e'], &["l"], &[])
        }
        "pwsh" | "powershell" => args
            .iter()
            .position(|a| {
                let l = a.to_ascii_lowercase();
                l == "-c" || l == "-command"
            })
            .map(|i| args[i + 1..].join(" ")),
        _ => None,
    };
    let Some(code) = code else {
        return true;
    };
    reader.finding(
        Class::CodeInline,
        program,
        format!("{program} runs inline code"),
        inv,
    );
    if let Some(call) = deletion_call(&code) {
        reader.finding(
            Class::CodeInlineDelete,
            program,
            format!("inline code calls {call}"),
            inv,
        );
    }
    for spawned in spawned_commands(&code) {
        match spawned {
            Spawned::Script(script) => reader.script(&script, inv, format!("{program} system()")),
            Spawned::Argv(argv) => {
                let mut next = inv.clone();
                next.via.push(format!("{program} spawn()"));
                next.depth += 1;
                reader.command(&argv, &next);
            }
        }
    }
    true
}

/// The code given by `-c CODE`, `-cCODE`, a cluster like `-lne CODE`, or a
/// long option. `value_letters` are options whose value must be skipped.
fn short_code(
    args: &[String],
    code_letters: &[char],
    value_letters: &[&str],
    longs: &[&str],
) -> Option<String> {
    let takes_value = |c: char| value_letters.iter().any(|s| s.contains(c));
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            return None;
        }
        if let Some((name, value)) = arg.split_once('=')
            && longs.contains(&name)
        {
            return Some(value.to_string());
        }
        if longs.contains(&arg.as_str()) {
            return args.get(i + 1).cloned();
        }
        if arg.starts_with("--") {
            i += 1;
            continue;
        }
        if let Some(cluster) = arg.strip_prefix('-')
            && !cluster.is_empty()
        {
            let letters: Vec<char> = cluster.chars().collect();
            for (j, &letter) in letters.iter().enumerate() {
                if code_letters.contains(&letter) {
                    let attached: String = letters[j + 1..].iter().collect();
                    return if attached.is_empty() {
                        args.get(i + 1).cloned()
                    } else {
                        Some(attached)
                    };
                }
                if takes_value(letter) {
                    if j + 1 == letters.len() {
                        i += 1;
                    }
                    break;
                }
            }
            i += 1;
            continue;
        }
        // The first operand is a script file: no inline code.
        return None;
    }
    None
}

const DELETION_CALLS: &[&str] = &[
    "rmtree",
    "os.remove",
    "os.unlink",
    "os.rmdir",
    "os.removedirs",
    ".unlink(",
    "rmSync",
    "rmdirSync",
    "unlinkSync",
    "fs.rm(",
    "fs.promises.rm",
    "rm_rf",
    "rm_r",
    "FileUtils.rm",
    "File.delete",
    "remove_dir_all",
    "unlink ",
    "rmtree(",
    "dropDatabase",
    "DROP TABLE",
    "DROP DATABASE",
    "drop table",
    "drop database",
];

fn deletion_call(code: &str) -> Option<&'static str> {
    DELETION_CALLS
        .iter()
        .copied()
        .find(|call| code.contains(call))
}

/// A command the inline code starts: a shell string or an argv list.
enum Spawned {
    Script(String),
    Argv(Vec<String>),
}

/// Commands passed as string literals to functions that run them:
/// `os.system("...")`, `subprocess.run(["rm", "-rf", x])`,
/// `execSync('...')`, `spawnSync('rm', ['-rf', '/'])`, `system("rm", "-rf")`.
fn spawned_commands(code: &str) -> Vec<Spawned> {
    const RUNNERS: &[&str] = &[
        "system(",
        "popen(",
        "run(",
        "call(",
        "check_call(",
        "check_output(",
        "Popen(",
        "execSync(",
        "exec(",
        "spawn(",
        "spawnSync(",
        "execFile(",
        "execFileSync(",
        "shell_exec(",
        "passthru(",
    ];
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find('(') {
        let open = from + at;
        from = open + 1;
        let head = &code[..=open];
        if !RUNNERS.iter().any(|r| head.ends_with(r)) {
            continue;
        }
        let literals = call_literals(&code[open + 1..]);
        match literals.len() {
            0 => {}
            1 => out.push(Spawned::Script(
                literals.into_iter().next().unwrap_or_default(),
            )),
            _ => out.push(Spawned::Argv(literals)),
        }
    }
    // Ruby and Perl backquotes: every odd segment that has a closing quote.
    let segments: Vec<&str> = code.split('`').collect();
    for (i, segment) in segments.iter().enumerate() {
        if i % 2 == 1 && i + 1 < segments.len() {
            out.push(Spawned::Script(segment.to_string()));
        }
    }
    out
}

/// The leading string literals of a call's arguments, lists flattened:
/// `"rm", ["-rf", "/x"], {...}` -> rm, -rf, /x. Stops at anything else.
fn call_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    loop {
        if let Some(inner) = rest.strip_prefix('[') {
            rest = inner.trim_start();
            continue;
        }
        match first_literal(rest) {
            Some((literal, after)) => {
                out.push(literal);
                rest = after.trim_start();
            }
            None => break,
        }
        rest = rest.strip_prefix(']').unwrap_or(rest).trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None => break,
        }
        if out.len() > 256 {
            break;
        }
    }
    out
}

/// A leading quoted literal and the text after it.
fn first_literal(text: &str) -> Option<(String, &str)> {
    let quote = text.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let mut literal = String::new();
    let mut chars = text[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    literal.push(next);
                }
            }
            c if c == quote => return Some((literal, &text[1 + i + 1..])),
            c => literal.push(c),
        }
    }
    None
}

/// `python manage.py flush` empties every table of a Django database.
fn django_manage(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) {
    let Some(pos) = args.iter().position(|a| !a.starts_with('-')) else {
        return;
    };
    if !args[pos].ends_with("manage.py") {
        return;
    }
    if let Some(command) = args.get(pos + 1)
        && matches!(command.as_str(), "flush" | "reset_db" | "sqlflush")
    {
        reader.finding(
            Class::PaasDbReset,
            program,
            format!("manage.py {command} empties the database"),
            inv,
        );
    }
}
