//! `guard approve ID [--for session|DURATION] [--session NAME]`

use std::path::Path;

use anyhow::{Context as _, bail};

use super::{call, finish, socket_of_hold, target};
use crate::{
    api::wire::Op,
    cli::ApproveArgs,
    holds::{GrantScope, Hold},
};

/// `once`, `session`, or a duration such as `10m`.
pub fn parse_scope(text: Option<&str>) -> anyhow::Result<GrantScope> {
    Ok(match text {
        None | Some("once") => GrantScope::Once,
        Some("session") => GrantScope::Session,
        Some(other) => {
            let d = humantime::parse_duration(other).with_context(|| {
                format!("--for {other:?}: use once, session, or a duration such as 10m or 1h30m")
            })?;
            if d.is_zero() {
                bail!("--for {other:?}: a grant must last longer than zero");
            }
            GrantScope::For(d)
        }
    })
}

pub fn run(args: ApproveArgs, socket: Option<&Path>) -> i32 {
    finish(args.json.json, || {
        let scope = parse_scope(args.scope.as_deref())?;
        let path = socket_of_hold(&target(socket)?, args.id, args.session.as_deref())?;
        let hold = call(&path, Op::Approve { id: args.id, scope })?;
        if args.json.json {
            println!("{}", serde_json::json!({"ok": true, "approved": hold}));
        } else {
            let hold: Hold = serde_json::from_value(hold)?;
            let lasting = match scope {
                GrantScope::Once => "once".to_owned(),
                GrantScope::Session => "for the rest of the session".to_owned(),
                GrantScope::For(d) => format!("for {}", humantime::format_duration(d)),
            };
            println!(
                "approved hold {} in session {} ({lasting}): {}",
                hold.id, hold.request.session, hold.request.action
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(parse_scope(None).unwrap(), GrantScope::Once);
        assert_eq!(parse_scope(Some("session")).unwrap(), GrantScope::Session);
        assert_eq!(
            parse_scope(Some("10m")).unwrap(),
            GrantScope::For(Duration::from_secs(600))
        );
        assert!(parse_scope(Some("forever")).is_err());
        assert!(parse_scope(Some("0s")).is_err());
    }
}
