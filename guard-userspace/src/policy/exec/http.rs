//! HTTP clients: curl, wget, httpie/xh. A DELETE request, or a body or path
//! that names a destructive API mutation (GraphQL `volumeDelete`, `/destroy`),
//! is reported; GET and ordinary POSTs are not.

use super::{
    Class, Invocation, Reader,
    args::{self, Spec},
    read_small_file,
};

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    let (method, bodies, urls) = match program {
        "curl" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "AbcCdDeEFHKmorTuUwxXyYzQtP",
                    long_values: &[
                        "request",
                        "data",
                        "data-raw",
                        "data-binary",
                        "data-urlencode",
                        "data-ascii",
                        "json",
                        "header",
                        "url",
                        "output",
                        "user",
                        "form",
                        "form-string",
                        "cookie",
                        "cookie-jar",
                        "user-agent",
                        "referer",
                        "proxy",
                        "max-time",
                        "connect-timeout",
                        "config",
                        "write-out",
                        "upload-file",
                        "cert",
                        "key",
                        "cacert",
                        "resolve",
                        "connect-to",
                        "retry",
                        "oauth2-bearer",
                        "variable",
                        "expand-data",
                    ],
                    ..Spec::default()
                },
            );
            let method = parsed
                .value(Some('X'), &["request"])
                .map(str::to_ascii_uppercase);
            let bodies: Vec<String> = parsed
                .opts
                .iter()
                .filter(|o| {
                    (!o.long && matches!(o.name.as_str(), "d" | "F"))
                        || (o.long
                            && (o.name.starts_with("data")
                                || o.name == "json"
                                || o.name.starts_with("form")))
                })
                .filter_map(|o| o.value.clone())
                .collect();
            let mut urls = parsed.operands.clone();
            urls.extend(parsed.value(None, &["url"]).map(String::from));
            let method = method.or_else(|| (!bodies.is_empty()).then(|| "POST".to_string()));
            (method, bodies, urls)
        }
        "wget" => {
            let parsed = args::parse(
                args,
                &Spec {
                    short_values: "OoaePUtTwQlAR",
                    long_values: &[
                        "method",
                        "body-data",
                        "post-data",
                        "header",
                        "output-document",
                        "user",
                        "password",
                    ],
                    ..Spec::default()
                },
            );
            let method = parsed.value(None, &["method"]).map(str::to_ascii_uppercase);
            let bodies: Vec<String> = ["body-data", "post-data"]
                .iter()
                .filter_map(|n| parsed.value(None, &[n]).map(String::from))
                .collect();
            (method, bodies, parsed.operands.clone())
        }
        "http" | "https" | "xh" | "xhs" => {
            let operands: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            let (method, rest) = match operands.first() {
                Some(m) if m.chars().all(|c| c.is_ascii_uppercase()) && m.len() >= 3 => {
                    (Some(m.to_string()), &operands[1..])
                }
                _ => (None, &operands[..]),
            };
            let urls: Vec<String> = rest.iter().take(1).map(|s| s.to_string()).collect();
            let bodies: Vec<String> = rest.iter().skip(1).map(|s| s.to_string()).collect();
            (method, bodies, urls)
        }
        _ => return false,
    };
    // `-d @file`: the body is the file (read when it is small and local).
    let bodies: Vec<String> = bodies
        .into_iter()
        .map(|b| match b.strip_prefix('@') {
            Some(file) if !inv.remote && file != "-" => {
                read_small_file(&inv.cwd.join(file)).unwrap_or(b)
            }
            _ => b,
        })
        .collect();
    let url = urls.first().cloned().unwrap_or_default();
    if method.as_deref() == Some("DELETE") {
        reader.finding(
            Class::HttpDelete,
            program,
            format!("{program} DELETE {url}"),
            inv,
        );
        return true;
    }
    let mutating = matches!(method.as_deref(), Some("POST" | "PUT" | "PATCH"));
    if !mutating {
        return true;
    }
    if let Some(name) = bodies.iter().find_map(|b| destructive_mutation(b)) {
        reader.finding(
            Class::HttpMutation,
            program,
            format!("{program} sends the destructive API mutation {name} to {url}"),
            inv,
        );
    } else if let Some(segment) = urls.iter().find_map(|u| destructive_path(u)) {
        reader.finding(
            Class::HttpMutation,
            program,
            format!("{program} calls {segment} at {url}"),
            inv,
        );
    }
    true
}

const DESTRUCTIVE_WORDS: &[&str] = &[
    "delete",
    "destroy",
    "drop",
    "purge",
    "wipe",
    "truncate",
    "remove",
    "terminate",
    "reset",
];

/// A GraphQL mutation (or RPC method) whose name says it deletes: `volumeDelete`,
/// `deleteProject`, `"method":"purge"`.
pub(crate) fn destructive_mutation(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let graphql = lower.contains("mutation");
    let rpc = lower.contains("\"method\"") || lower.contains("\"action\"");
    if !graphql && !rpc {
        return None;
    }
    body.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .find(|w| {
            let l = w.to_ascii_lowercase();
            DESTRUCTIVE_WORDS
                .iter()
                .any(|d| l.starts_with(d) || l.ends_with(d))
        })
        .map(String::from)
}

/// A URL path segment such as `/delete`, `/destroy`, `:purge`.
fn destructive_path(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    let path = path.split_once('/').map_or("", |(_, p)| p);
    path.split(['/', ':'])
        .find(|segment| {
            let l = segment.to_ascii_lowercase();
            DESTRUCTIVE_WORDS
                .iter()
                .any(|d| l == *d || l.ends_with(&format!("-{d}")) || l.ends_with(&format!("_{d}")))
        })
        .map(|s| format!("/{s}"))
}
