//! Platforms, PaaS CLIs and ORMs: supabase, prisma, drizzle-kit, rails/rake,
//! heroku, fly, railway, vercel, netlify, gh, glab, npm.

use super::{Class, Invocation, Reader};

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let (class, detail) = match (program, words.as_slice()) {
        ("supabase", ["db", "reset", ..]) => (
            Class::PaasDbReset,
            if has("--linked") || has("--db-url") {
                "supabase db reset --linked wipes the remote database".to_string()
            } else {
                "supabase db reset wipes the database".to_string()
            },
        ),
        ("supabase", ["projects", "delete", ..]) => {
            (Class::PaasDestroy, "supabase projects delete".into())
        }
        ("prisma", ["migrate", "reset", ..]) => (
            Class::PaasDbReset,
            "prisma migrate reset drops the database".into(),
        ),
        ("prisma", ["db", "push", ..]) if has("--force-reset") || has("--accept-data-loss") => (
            Class::PaasDbReset,
            "prisma db push --force-reset drops the data".into(),
        ),
        ("drizzle-kit", ["push", ..]) if has("--force") => (
            Class::PaasDbReset,
            "drizzle-kit push --force applies data-losing changes without asking".into(),
        ),
        ("drizzle-kit", ["drop", ..]) => (Class::DbDrop, "drizzle-kit drop".into()),
        ("rake", _) if super::dry_run(args) || args.iter().any(|a| a == "-n") => return true,
        ("rails" | "rake" | "bin/rails", _) => {
            let Some(task) = words.iter().find(|w| {
                matches!(
                    **w,
                    "db:drop"
                        | "db:reset"
                        | "db:schema:load"
                        | "db:purge"
                        | "db:truncate_all"
                        | "db:migrate:reset"
                        | "db:drop:all"
                        | "db:setup"
                        | "db:seed:replant"
                )
            }) else {
                return true;
            };
            if !production(args, inv) {
                return true;
            }
            (
                Class::PaasDbReset,
                format!("{program} {task} against the production database"),
            )
        }
        ("heroku", [cmd, ..]) if matches!(*cmd, "pg:reset" | "pg:killall") => {
            (Class::PaasDbReset, format!("heroku {cmd}"))
        }
        ("heroku", [cmd, ..])
            if matches!(
                *cmd,
                "apps:destroy" | "apps:delete" | "addons:destroy" | "destroy"
            ) =>
        {
            (Class::PaasDestroy, format!("heroku {cmd}"))
        }
        ("fly" | "flyctl", [group, verb, ..])
            if matches!(
                *group,
                "volumes"
                    | "volume"
                    | "vol"
                    | "apps"
                    | "app"
                    | "postgres"
                    | "pg"
                    | "machine"
                    | "machines"
                    | "secrets"
            ) && matches!(*verb, "destroy" | "delete" | "rm" | "remove")
                && *group != "secrets" =>
        {
            (Class::PaasDestroy, format!("fly {group} {verb}"))
        }
        ("fly" | "flyctl", ["destroy", ..]) => (Class::PaasDestroy, "fly destroy".into()),
        ("railway", ["down", ..]) => (
            Class::PaasDestroy,
            "railway down removes the deployment".into(),
        ),
        ("railway", [group, "delete" | "rm", ..]) => {
            (Class::PaasDestroy, format!("railway {group} delete"))
        }
        ("railway", ["delete", ..]) => (Class::PaasDestroy, "railway delete".into()),
        ("vercel", ["rm" | "remove", ..]) => (Class::PaasDestroy, "vercel rm".into()),
        ("vercel", [group, "rm" | "remove", ..]) => {
            (Class::PaasDestroy, format!("vercel {group} rm"))
        }
        ("netlify", [cmd, ..]) if cmd.ends_with(":delete") => {
            (Class::PaasDestroy, format!("netlify {cmd}"))
        }
        ("wrangler", [.., "delete"]) | ("wrangler", ["delete", ..]) => {
            (Class::PaasDestroy, format!("wrangler {}", words.join(" ")))
        }
        ("gh" | "glab", ["repo", "delete", ..]) => {
            (Class::PlatformDelete, format!("{program} repo delete"))
        }
        ("gh" | "glab", [group, "delete", ..])
            if matches!(
                *group,
                "release" | "project" | "secret" | "variable" | "cache" | "run"
            ) =>
        {
            (Class::PlatformDelete, format!("{program} {group} delete"))
        }
        ("gh" | "glab", ["api", ..]) => {
            let method = args
                .iter()
                .position(|a| a == "-X" || a == "--method")
                .and_then(|i| args.get(i + 1).cloned())
                .or_else(|| {
                    args.iter().find_map(|a| {
                        a.strip_prefix("--method=")
                            .or_else(|| a.strip_prefix("-X"))
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                    })
                });
            if method.is_some_and(|m| m.eq_ignore_ascii_case("DELETE")) {
                (Class::HttpDelete, format!("{program} api -X DELETE"))
            } else if let Some(name) = args
                .iter()
                .filter_map(|a| a.strip_prefix("query="))
                .find_map(super::http::destructive_mutation)
            {
                (
                    Class::HttpMutation,
                    format!("{program} api graphql mutation {name}"),
                )
            } else {
                return true;
            }
        }
        ("npm", ["unpublish", ..]) => (Class::PlatformDelete, "npm unpublish".into()),
        ("npm", ["exec" | "x", ..]) => {
            let rest: Vec<String> = match args.iter().position(|a| a == "--") {
                Some(dash) => args[dash + 1..].to_vec(),
                None => args
                    .get(1..)
                    .unwrap_or(&[])
                    .iter()
                    .skip_while(|a| a.starts_with('-'))
                    .cloned()
                    .collect(),
            };
            let mut next = inv.clone();
            next.via.push("npm exec".into());
            next.depth += 1;
            reader.command(&rest, &next);
            return true;
        }
        _ => {
            return matches!(
                program,
                "supabase"
                    | "prisma"
                    | "drizzle-kit"
                    | "rails"
                    | "rake"
                    | "heroku"
                    | "fly"
                    | "flyctl"
                    | "railway"
                    | "vercel"
                    | "netlify"
                    | "wrangler"
                    | "gh"
                    | "glab"
                    | "npm"
            );
        }
    };
    reader.finding(class, program, detail, inv);
    true
}

/// Whether a rails/rake command targets production: `RAILS_ENV=production`
/// (prefix or argument), `-e production`, or the safety check disabled.
fn production(args: &[String], inv: &Invocation) -> bool {
    let is_prod = |v: &str| v.starts_with("prod");
    let env_vars = ["RAILS_ENV", "RACK_ENV"];
    env_vars
        .iter()
        .any(|k| inv.env_value(k).is_some_and(is_prod))
        || inv.env_value("DISABLE_DATABASE_ENVIRONMENT_CHECK") == Some("1")
        || args.iter().any(|a| {
            env_vars
                .iter()
                .any(|k| a.strip_prefix(&format!("{k}=")).is_some_and(is_prod))
        })
        || args
            .windows(2)
            .any(|w| (w[0] == "-e" || w[0] == "--environment") && is_prod(&w[1]))
        || args
            .iter()
            .any(|a| a.strip_prefix("--environment=").is_some_and(is_prod))
}
