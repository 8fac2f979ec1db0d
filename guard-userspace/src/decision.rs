//! Decisions: what happens to an action once policy has looked at it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A rule's action. Ordered by severity, so the strictest of several matching
/// rules can be chosen with `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Let it run, record nothing beyond counters.
    Allow,
    /// Let it run and write an audit record.
    Log,
    /// Hold the action until a person (or the ask timeout) decides.
    Ask,
    /// Hold the action and freeze the whole session until someone decides.
    Freeze,
    /// Refuse the action (EPERM); the agent carries on.
    Deny,
    /// Refuse the action and kill the process that tried it.
    Kill,
}

impl Decision {
    /// Whether the action needs a person before it may proceed.
    pub fn holds(self) -> bool {
        matches!(self, Decision::Ask | Decision::Freeze)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Log => "log",
            Decision::Ask => "ask",
            Decision::Freeze => "freeze",
            Decision::Deny => "deny",
            Decision::Kill => "kill",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "allow" => Decision::Allow,
            "log" => Decision::Log,
            "ask" => Decision::Ask,
            "freeze" => Decision::Freeze,
            "deny" => Decision::Deny,
            "kill" => Decision::Kill,
            other => {
                return Err(format!(
                    "unknown decision {other:?}: use allow, log, ask, freeze, deny or kill"
                ));
            }
        })
    }
}

/// Policy's answer for one action: the decision, the rule that made it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    /// Id of the deciding rule, or `default.<kind>` when no rule matched.
    pub rule: String,
    /// One sentence for the person approving and for the agent's stderr.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictest_wins_and_round_trips() {
        assert_eq!(Decision::Ask.max(Decision::Log), Decision::Ask);
        assert_eq!(Decision::Deny.max(Decision::Freeze), Decision::Deny);
        for d in [
            Decision::Allow,
            Decision::Log,
            Decision::Ask,
            Decision::Freeze,
            Decision::Deny,
            Decision::Kill,
        ] {
            assert_eq!(d.as_str().parse::<Decision>(), Ok(d));
        }
        assert!(
            "maybe"
                .parse::<Decision>()
                .unwrap_err()
                .contains("use allow")
        );
    }
}
