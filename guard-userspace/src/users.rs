//! Accounts: who invoked guard (SUDO_UID/SUDO_GID or `--user`), and names for
//! uids in approvals. Reads the passwd database through libc (NSS aware).

use std::ffi::{CStr, CString};

use anyhow::{Context as _, bail};

/// The account a session's command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Supplementary groups, looked up before fork (initgroups is not
    /// async-signal-safe).
    pub groups: Vec<u32>,
}

/// `--user NAME|UID`, else the sudo caller, else whoever runs guard.
pub fn invoking_account(user: Option<&str>) -> anyhow::Result<Account> {
    if let Some(user) = user {
        return match user.parse::<u32>() {
            Ok(uid) => by_uid(uid)?.with_context(|| format!("no account has uid {uid}")),
            Err(_) => by_name(user)?.with_context(|| {
                format!("no account named {user:?}: pass an existing user to --user")
            }),
        };
    }
    if let Some(uid) = env_id("SUDO_UID")? {
        let mut account = by_uid(uid)?
            .with_context(|| format!("SUDO_UID={uid} names no account; pass --user"))?;
        if let Some(gid) = env_id("SUDO_GID")? {
            account.gid = gid;
        }
        return Ok(account);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    by_uid(uid)?.with_context(|| format!("the current uid {uid} has no passwd entry; pass --user"))
}

fn env_id(var: &str) -> anyhow::Result<Option<u32>> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .map(Some)
            .with_context(|| format!("{var}={v:?} is not a number; unset it or pass --user")),
        Err(_) => Ok(None),
    }
}

/// A name for approvals: "alice" or "uid 1000".
pub fn name_of(uid: u32) -> String {
    by_uid(uid)
        .ok()
        .flatten()
        .map(|a| a.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

pub fn by_uid(uid: u32) -> anyhow::Result<Option<Account>> {
    lookup(|pwd, buf, result| {
        // SAFETY: all pointers are valid for the call; buf's length is passed.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

pub fn by_name(name: &str) -> anyhow::Result<Option<Account>> {
    let Ok(cname) = CString::new(name) else {
        bail!("user name {name:?} contains a NUL byte");
    };
    lookup(|pwd, buf, result| {
        // SAFETY: as above; cname outlives the call.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

fn lookup(
    call: impl Fn(&mut libc::passwd, &mut Vec<libc::c_char>, &mut *mut libc::passwd) -> libc::c_int,
) -> anyhow::Result<Option<Account>> {
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    // SAFETY: passwd is plain data; zeroed is a valid (unused) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pwd, &mut buf, &mut result);
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("reading the passwd database");
    }
    if result.is_null() {
        return Ok(None);
    }
    // SAFETY: on success the strings point into buf, which is alive here.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
        )
    };
    let groups = group_list(&name, pwd.pw_gid);
    Ok(Some(Account {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home,
        groups,
    }))
}

fn group_list(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(name) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let want = n;
        // SAFETY: groups has room for n entries; n is updated with the count.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return groups;
        }
        if n <= want {
            n = want * 2;
        }
        if n > 65536 {
            return vec![gid];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_both_ways() {
        let root = by_uid(0).unwrap().expect("uid 0 exists");
        assert_eq!(root.name, "root");
        assert_eq!(by_name("root").unwrap().unwrap().uid, 0);
        assert!(root.groups.contains(&0));
        assert_eq!(by_name("no-such-user-guard-test").unwrap(), None);
        assert!(invoking_account(Some("no-such-user-guard-test")).is_err());
        assert_eq!(invoking_account(Some("0")).unwrap().uid, 0);
    }
}
