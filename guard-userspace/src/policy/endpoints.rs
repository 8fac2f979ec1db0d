//! Protected network endpoints: the smallest real connect rule until the
//! policy language lands (`network:` rules with names, CIDRs and ports).

use std::net::SocketAddr;

use crate::{
    action::Endpoint,
    decision::{Decision, Verdict},
};

/// Endpoints whose connect needs a person, e.g. a production database.
#[derive(Debug, Clone, Default)]
pub struct ProtectedEndpoints {
    addrs: Vec<SocketAddr>,
}

impl ProtectedEndpoints {
    pub fn add(&mut self, addr: SocketAddr) {
        self.addrs.push(addr);
    }

    /// Ask for a connect to a protected address (IP and port); None otherwise.
    pub fn verdict(&self, endpoint: &Endpoint) -> Option<Verdict> {
        let Endpoint::Inet { addr } = endpoint else {
            return None;
        };
        self.addrs.contains(addr).then(|| Verdict {
            decision: Decision::Ask,
            rule: "network.protected".into(),
            reason: format!("{addr} is a protected endpoint"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_protected_address_and_port_ask() {
        let mut p = ProtectedEndpoints::default();
        p.add("127.0.0.2:5432".parse().unwrap());
        let at = |s: &str| Endpoint::Inet {
            addr: s.parse().unwrap(),
        };
        assert_eq!(
            p.verdict(&at("127.0.0.2:5432")).map(|v| v.decision),
            Some(Decision::Ask)
        );
        assert_eq!(p.verdict(&at("127.0.0.1:5432")), None);
        assert_eq!(p.verdict(&at("127.0.0.2:5433")), None);
    }
}
