//! Database clients: the SQL they are given (argv, `-f FILE`, here-documents,
//! `< FILE`) is read by [`super::sql`]; dropdb, pg_restore --clean and
//! mysqladmin drop are destructive by themselves.

use super::{
    Class, Invocation, Reader,
    args::{self, Spec},
    read_small_file, shell, sql,
};

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    let mut texts: Vec<String> = Vec::new();
    match program {
        "psql" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "cdfhLopPRTUvF",
                    long_values: &[
                        "command",
                        "dbname",
                        "file",
                        "host",
                        "log-file",
                        "output",
                        "port",
                        "pset",
                        "record-separator",
                        "table-attr",
                        "username",
                        "set",
                        "variable",
                        "field-separator",
                    ],
                    ..Spec::default()
                },
            );
            for opt in &parsed.opts {
                match (opt.name.as_str(), &opt.value) {
                    ("c" | "command", Some(v)) => texts.push(v.clone()),
                    ("f" | "file", Some(v)) if v != "-" => texts.extend(file_text(v, inv)),
                    _ => {}
                }
            }
        }
        "mysql" | "mariadb" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "eDhuPSo",
                    long_values: &[
                        "execute",
                        "database",
                        "host",
                        "user",
                        "port",
                        "socket",
                        "init-command",
                    ],
                    ..Spec::default()
                },
            );
            for opt in &parsed.opts {
                if let ("e" | "execute" | "init-command", Some(v)) = (opt.name.as_str(), &opt.value)
                {
                    texts.push(v.clone());
                }
            }
        }
        "sqlite3" | "sqlite" => {
            // sqlite3 [OPTIONS] FILE [SQL]...: options are single-dash words.
            let mut operands = Vec::new();
            let mut i = 0;
            while let Some(arg) = args.get(i) {
                if matches!(
                    arg.as_str(),
                    "-cmd"
                        | "-separator"
                        | "-newline"
                        | "-nullvalue"
                        | "-init"
                        | "-vfs"
                        | "-maxsize"
                        | "-mmap"
                        | "-pagecache"
                        | "-lookaside"
                        | "-heap"
                ) {
                    if arg == "-cmd"
                        && let Some(v) = args.get(i + 1)
                    {
                        texts.push(v.clone());
                    }
                    i += 2;
                    continue;
                }
                if !arg.starts_with('-') {
                    operands.push(arg.clone());
                }
                i += 1;
            }
            texts.extend(operands.into_iter().skip(1));
        }
        "mongosh" | "mongo" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "uph",
                    long_values: &[
                        "eval",
                        "host",
                        "port",
                        "username",
                        "password",
                        "authenticationDatabase",
                        "file",
                    ],
                    ..Spec::default()
                },
            );
            for opt in &parsed.opts {
                match (opt.name.as_str(), &opt.value) {
                    ("eval", Some(v)) => texts.push(v.clone()),
                    ("file" | "f", Some(v)) => texts.extend(file_text(v, inv)),
                    _ => {}
                }
            }
            for operand in &parsed.operands {
                if operand.ends_with(".js") {
                    texts.extend(file_text(operand, inv));
                }
            }
        }
        "redis-cli" | "valkey-cli" | "keydb-cli" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "hpsanurid",
                    long_values: &[
                        "user", "pass", "eval", "tls", "cacert", "cert", "key", "sni",
                    ],
                    stop_at_operand: true,
                },
            );
            let command = args[parsed.rest_at..].join(" ");
            if !command.is_empty() {
                texts.push(command);
            }
        }
        "clickhouse-client" | "clickhouse" | "cockroach" | "cqlsh" | "snowsql" | "duckdb" => {
            for (i, arg) in args.iter().enumerate() {
                for flag in ["--query", "-q", "--execute", "-e"] {
                    if arg == flag
                        && let Some(v) = args.get(i + 1)
                    {
                        texts.push(v.clone());
                    } else if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
                        texts.push(v.to_string());
                    }
                }
            }
        }
        "dropdb" | "dropuser" => {
            let db = args
                .iter()
                .rfind(|a| !a.starts_with('-'))
                .cloned()
                .unwrap_or_default();
            reader.finding(Class::DbDrop, program, format!("{program} {db}"), inv);
            return true;
        }
        "mysqladmin" => {
            if let Some(pos) = args.iter().position(|a| a == "drop") {
                let db = args.get(pos + 1).cloned().unwrap_or_default();
                reader.finding(Class::DbDrop, program, format!("mysqladmin drop {db}"), inv);
            }
            return true;
        }
        "pg_restore" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "dfFhjLnNpPsStTU",
                    ..Spec::default()
                },
            );
            if parsed.has(Some('c'), &["clean"]) {
                reader.finding(
                    Class::DbDrop,
                    program,
                    "pg_restore --clean drops database objects before recreating them".into(),
                    inv,
                );
            }
            return true;
        }
        _ => return false,
    }
    match &inv.stdin {
        shell::Stdin::Text(text) => texts.push(text.clone()),
        shell::Stdin::File(file) => texts.extend(file_text(file, inv)),
        _ => {}
    }
    for text in texts {
        for (class, head) in sql::classify(&text) {
            reader.finding(class, program, format!("{program}: {head}"), inv);
        }
    }
    true
}

fn file_text(file: &str, inv: &Invocation) -> Option<String> {
    if inv.remote {
        return None;
    }
    read_small_file(&inv.cwd.join(file))
}
