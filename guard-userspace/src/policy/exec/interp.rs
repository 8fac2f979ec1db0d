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
    for command in shell_literals(&code) {
        reader.script(&command, inv, format!("{program} system()"));
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

/// String literals passed to functions that run a shell command.
fn shell_literals(code: &str) -> Vec<String> {
    const RUNNERS: &[&str] = &[
        "system(",
        "popen(",
        "subprocess.run(",
        "subprocess.call(",
        "check_call(",
        "check_output(",
        "Popen(",
        "execSync(",
        "spawnSync(",
        "exec(",
        "shell_exec(",
        "passthru(",
    ];
    let mut out = Vec::new();
    for runner in RUNNERS {
        let mut from = 0;
        while let Some(at) = code[from..].find(runner) {
            let start = from + at + runner.len();
            from = start;
            let rest = code[start..].trim_start();
            let rest = rest.strip_prefix('[').unwrap_or(rest);
            if let Some(literal) = first_literal(rest) {
                out.push(literal);
            }
        }
    }
    // Ruby and Perl backquotes: every odd segment that has a closing quote.
    let segments: Vec<&str> = code.split('`').collect();
    for (i, segment) in segments.iter().enumerate() {
        if i % 2 == 1 && i + 1 < segments.len() {
            out.push(segment.to_string());
        }
    }
    out
}

fn first_literal(text: &str) -> Option<String> {
    let quote = text.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let mut literal = String::new();
    let mut chars = text[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    literal.push(next);
                }
            }
            c if c == quote => return Some(literal),
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
