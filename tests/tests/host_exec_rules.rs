//! Host tier: the kernel's rule tables answer the way the programs rely on
//! (longest prefix wins, `/` covers what nothing else does, exact names end
//! with their NUL, suffixes match reversed), checked with the kernel's own
//! LPM lookups on the pinned maps.

use std::path::Path;

use aya::maps::{MapData, lpm_trie::LpmTrie};
use guard::{
    kernel_maps::{KernelRuleSet, NameMatch, PathScope, name_key, path_key},
    programs::ProgramSet,
};
use guard_common::{EventKind, NamePrefix, PathPrefix, Rule, session::SESSION_KEY_LEN};
use guard_tests::{TestCgroup, require_root};

/// The key a kernel program builds for `path`: session, path, NUL.
fn lookup_key(session: u64, path: &str) -> aya::maps::lpm_trie::Key<PathPrefix> {
    let mut data = PathPrefix {
        session: session.to_be_bytes(),
        path: [0; guard_common::rules::PATH_PREFIX_MAX],
    };
    let bytes = path.as_bytes();
    data.path[..bytes.len()].copy_from_slice(bytes);
    aya::maps::lpm_trie::Key::new(((SESSION_KEY_LEN + bytes.len() + 1) * 8) as u32, data)
}

#[test]
fn rule_tables_match_like_the_kernel_programs_expect() {
    require_root();
    let cg = TestCgroup::new("rules");
    let set = ProgramSet::load(cg.cgroup.depth().unwrap(), &[]).expect("loading the object");
    let mut maps = set.maps().expect("opening the pinned maps");
    let session = 42;
    let unlink = EventKind::Unlink.bit();
    let rules = KernelRuleSet {
        unmatched_file_hold: unlink,
        allowed_trees: vec!["/w".into()],
        protected_trees: vec!["/w/.git".into()],
        protected_names: vec![(NameMatch::Suffix, ".tfstate".into())],
        ..Default::default()
    };
    maps.install(session, &rules).expect("installing");
    let paths: LpmTrie<MapData, PathPrefix, Rule> = LpmTrie::try_from(
        aya::maps::Map::from_map_data(
            MapData::from_pin(set.pin_dir().map_path("PATH_RULES")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let hold_of = |p: &str| {
        paths
            .get(&lookup_key(session, p), 0)
            .map(|r| r.hold)
            .unwrap_or(0)
    };
    assert_eq!(
        hold_of("/elsewhere/x") & unlink,
        unlink,
        "`/` covers unmatched paths"
    );
    assert_eq!(hold_of("/w/src/main.rs"), 0, "the workspace overrides `/`");
    assert_ne!(
        hold_of("/w/.git/config") & unlink,
        0,
        "a protected tree inside the workspace"
    );
    assert_ne!(
        hold_of("/w/.git") & unlink,
        0,
        "the protected directory itself"
    );
    assert_eq!(
        hold_of("/w/.github/x"),
        0,
        "a sibling with the same leading bytes"
    );
    assert!(
        paths
            .get(&lookup_key(session + 1, "/elsewhere/x"), 0)
            .is_err(),
        "another session sees none of these rules"
    );

    let suffixes: LpmTrie<MapData, NamePrefix, Rule> = LpmTrie::try_from(
        aya::maps::Map::from_map_data(
            MapData::from_pin(set.pin_dir().map_path("NAME_SUFFIX_RULES")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let reversed = |name: &str| {
        let mut data = NamePrefix {
            session: session.to_be_bytes(),
            name: [0; guard_common::rules::NAME_KEY_LEN],
        };
        for (d, s) in data.name.iter_mut().zip(name.bytes().rev()) {
            *d = s;
        }
        aya::maps::lpm_trie::Key::new(((SESSION_KEY_LEN + name.len().min(30)) * 8) as u32, data)
    };
    assert!(suffixes.get(&reversed("prod.tfstate"), 0).is_ok());
    assert!(suffixes.get(&reversed("prod.tfstate.backup"), 0).is_err());
    let _ = (
        name_key(session, NameMatch::Exact, ".git"),
        path_key(session, Path::new("/"), PathScope::Below),
    );
}

/// The embedded policy's kernel tables land in the maps: its watched
/// programs, its protected names (suffixes reversed), its unix sockets.
#[test]
fn embedded_policy_compiles_into_the_maps() {
    require_root();
    let cg = TestCgroup::new("rules-policy");
    let set = ProgramSet::load(cg.cgroup.depth().unwrap(), &[]).expect("loading the object");
    let mut maps = set.maps().expect("opening the pinned maps");
    let session = 7;
    let policy = guard::policy::Policy::embedded_default().with_workspace("/w");
    let flags = guard::kernel_policy::install(&mut maps, session, &policy.kernel_tables())
        .expect("installing the policy's tables");
    assert_ne!(flags & guard_common::session_flags::WATCH_FILES, 0);
    let open = |name: &str| {
        aya::maps::Map::from_map_data(MapData::from_pin(set.pin_dir().map_path(name)).unwrap())
            .unwrap()
    };
    let execs: aya::maps::HashMap<MapData, guard_common::WatchedExec, Rule> =
        aya::maps::HashMap::try_from(open("WATCHED_EXEC")).unwrap();
    let terraform = guard::kernel_maps::exec_key(session, "terraform").unwrap();
    assert!(
        execs.get(&terraform, 0).is_ok(),
        "terraform must be stopped at exec"
    );
    let suffixes: LpmTrie<MapData, NamePrefix, Rule> =
        LpmTrie::try_from(open("NAME_SUFFIX_RULES")).unwrap();
    let key = name_key(session, NameMatch::Suffix, ".tfstate").unwrap();
    assert!(suffixes.get(&key, 0).is_ok(), "*.tfstate must be held");
    let paths: LpmTrie<MapData, PathPrefix, Rule> = LpmTrie::try_from(open("PATH_RULES")).unwrap();
    let docker = paths
        .get(&lookup_key(session, "/var/run/docker.sock"), 0)
        .expect("the docker socket has a rule");
    assert_ne!(docker.hold & EventKind::Connect.bit(), 0);
}
