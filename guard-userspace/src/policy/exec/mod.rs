//! Exec classifiers: read an argv the way a senior engineer reads it over the
//! agent's shoulder. Wrappers (`sudo`, `env`, `timeout`, `xargs`...), env
//! prefixes, `sh -c` strings (recursively) and interpreters with inline code
//! are unwrapped; each tool family's parser then reports what the command would
//! do as [`Finding`]s with a stable [`Class`] id that policy rules match on.

pub mod args;
mod cloud;
mod db;
mod fs;
mod git;
mod http;
mod infra;
mod interp;
mod paas;
pub mod shell;
pub mod sql;
mod wrappers;

use std::{
    ffi::OsString,
    fmt,
    path::{Component, Path, PathBuf},
};

use serde::Serialize;

macro_rules! classes {
    ($($variant:ident => $id:literal, $doc:literal;)*) => {
        /// What a command would do, as a stable id policy rules name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Class { $(#[doc = $doc] $variant,)* }

        impl Class {
            /// Every class, in documentation order.
            pub const ALL: &'static [Class] = &[$(Class::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Class::$variant => $id,)* }
            }

            /// One line on what the class means (docs/policy.md lists these).
            pub fn describe(self) -> &'static str {
                match self { $(Class::$variant => $doc,)* }
            }

            pub fn parse(id: &str) -> Option<Class> {
                match id { $($id => Some(Class::$variant),)* _ => None }
            }
        }
    };
}

classes! {
    FsDelete => "fs.delete", "removes files or directories (rm, rmdir, unlink, find -delete, rsync --delete)";
    FsWipe => "fs.wipe", "destroys data beyond recovery (shred, dd of=/dev/..., mkfs, wipefs, blkdiscard)";
    FsTruncate => "fs.truncate", "empties or overwrites files (truncate, dd of=FILE, `> FILE`)";
    GitPush => "git.push", "an ordinary git push (refs say which branches)";
    GitForcePush => "git.force-push", "git push --force or a +refspec: rewrites remote history";
    GitForcePushLease => "git.force-push-lease", "git push --force-with-lease: rewrites remote history if nobody else pushed";
    GitPushDelete => "git.push-delete", "git push --delete, :branch or --prune: deletes remote refs";
    GitPushMirror => "git.push-mirror", "git push --mirror: makes the remote an exact copy, deleting what is not local";
    GitDiscard => "git.discard", "throws away uncommitted work (reset --hard, clean -f, checkout -- ., restore)";
    GitStashDrop => "git.stash-drop", "git stash drop/clear: deletes stashed work";
    GitBranchForceDelete => "git.branch-force-delete", "git branch -D or update-ref -d: deletes unmerged branches";
    GitHistoryRewrite => "git.history-rewrite", "filter-branch, filter-repo, reflog expire: rewrites history";
    DbDrop => "db.drop", "DROP DATABASE/TABLE/SCHEMA, dropdb, dropDatabase(), pg_restore --clean";
    DbTruncate => "db.truncate", "TRUNCATE: empties tables";
    DbDeleteAll => "db.delete-all", "DELETE without WHERE, deleteMany({})";
    DbUpdateAll => "db.update-all", "UPDATE without WHERE";
    DbFlush => "db.flush", "Redis FLUSHALL/FLUSHDB";
    InfraDestroy => "infra.destroy", "terraform/tofu/pulumi/cdk destroy, apply -destroy, stack rm";
    InfraAutoApprove => "infra.auto-approve", "applies infrastructure changes without review (apply -auto-approve, up --yes)";
    InfraReplace => "infra.replace", "forces resources to be destroyed and recreated (-replace, taint)";
    InfraStateEdit => "infra.state-edit", "edits infrastructure state by hand (state rm/mv/push, force-unlock)";
    K8sDelete => "k8s.delete", "kubectl delete/drain/replace --force/apply --prune, helm uninstall";
    ContainerPrune => "container.prune", "docker/podman prune of containers, images, networks, build cache";
    ContainerVolumeDelete => "container.volume-delete", "deletes container volumes (volume rm/prune, compose down -v, prune --volumes)";
    CloudDelete => "cloud.delete", "aws/gcloud/az/gsutil/doctl delete, terminate, rm, rb, sync --delete";
    PaasDbReset => "paas.db-reset", "supabase db reset, prisma migrate reset, drizzle-kit push --force, rails db:drop in production, heroku pg:reset, manage.py flush";
    PaasDestroy => "paas.destroy", "deletes hosted apps, volumes or projects (fly volumes destroy, heroku apps:destroy)";
    PlatformDelete => "platform.delete", "gh repo/release delete, npm unpublish";
    HttpDelete => "http.delete", "an HTTP DELETE request (curl -X DELETE, httpie DELETE, gh api -X DELETE)";
    HttpMutation => "http.mutation", "an HTTP request whose body or path is a destructive API mutation (volumeDelete, /destroy)";
    CodeInline => "code.inline", "an interpreter running inline code (python -c, node -e, perl -e, ruby -e)";
    CodeInlineDelete => "code.inline-delete", "inline code that deletes files or data (shutil.rmtree, fs.rmSync, FileUtils.rm_rf)";
    ShellUnparsed => "shell.unparsed", "a shell string guard could not parse";
    ShellObfuscated => "shell.obfuscated", "decoded text piped into a shell (base64 -d | sh)";
    ShellStdinScript => "shell.stdin-script", "a shell reading its script from a pipe (curl ... | sh)";
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Class {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a finding acts on, when it acts on files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An absolute, lexically normalised path on this machine.
    Path(PathBuf),
    /// A path on another machine or in another user's home (`host:path`,
    /// `ssh host rm ...`, `~bob`): outside the workspace by definition.
    Unknown(String),
    /// A local path known only when the program runs (`$DIR`, xargs input,
    /// after `cd $X`). That program is exec'd, stopped and classified on its
    /// own with the real value, so rules do not guess here.
    Runtime(String),
}

/// One thing a command would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub class: Class,
    /// The program that does it (base name).
    pub program: String,
    /// One phrase for people: "rm -r of /home/u".
    pub detail: String,
    /// Files or directories acted on (filesystem classes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Branches or refs acted on (git classes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    /// Wrappers and shells it was found through: `["env", "bash -c"]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
}

/// The result of reading one exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Classification {
    pub findings: Vec<Finding>,
    /// Every program the command line would start, wrappers included.
    pub programs: Vec<String>,
    /// The arguments each of `programs` gets (same order).
    #[serde(skip)]
    pub arguments: Vec<Vec<String>>,
}

/// Reads an exec's argv. `filename` is the binary the kernel loaded (used when
/// argv[0] names nothing guard knows), `home` expands `~` and `$HOME`.
pub fn classify(argv: &[OsString], filename: &Path, cwd: &Path, home: &Path) -> Classification {
    let mut words: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if words.is_empty() {
        words.push(filename.to_string_lossy().into_owned());
    } else {
        // argv[0] is chosen by the caller (`exec -a`); the loaded file is not.
        let arg0 = program_name(&words[0]);
        let file = program_name(&filename.to_string_lossy());
        if !file.is_empty() && arg0 != file && is_known(&file) && !is_known(&arg0) {
            words[0] = filename.to_string_lossy().into_owned();
        }
    }
    let mut reader = Reader {
        home: home.to_path_buf(),
        out: Classification::default(),
        budget: 512,
        exhausted: false,
    };
    let invocation = Invocation {
        cwd: cwd.to_path_buf(),
        env: Vec::new(),
        stdin: shell::Stdin::Inherited,
        via: Vec::new(),
        remote: false,
        unknown_operands: false,
        stdin_operands: None,
        cwd_unknown: false,
        depth: 0,
    };
    reader.command(&words, &invocation);
    reader.out
}

/// The context one command runs in.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub cwd: PathBuf,
    /// Assignments from `FOO=1 cmd` and `env FOO=1 cmd`.
    pub env: Vec<(String, String)>,
    pub stdin: shell::Stdin,
    pub via: Vec<String>,
    /// Runs on another machine (ssh, kubectl exec): its paths are not ours.
    pub remote: bool,
    /// More operands arrive at run time (xargs).
    pub unknown_operands: bool,
    /// What the previous command in a pipeline prints, as paths, when known
    /// (`find . -name x | xargs rm`): xargs turns these into operands.
    pub stdin_operands: Option<Vec<String>>,
    /// A script changed directory to somewhere guard cannot know (`cd $DIR`).
    pub cwd_unknown: bool,
    pub depth: usize,
}

impl Invocation {
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn nested(&self, via: String) -> Invocation {
        let mut next = self.clone();
        next.via.push(via);
        next.depth += 1;
        next
    }
}

pub(crate) struct Reader {
    pub home: PathBuf,
    pub out: Classification,
    /// Upper bound on commands read from one exec (recursion, huge scripts).
    budget: usize,
    exhausted: bool,
}

impl Reader {
    /// Reads one command: strips assignments, unwraps wrappers, dispatches.
    pub fn command(&mut self, words: &[String], inv: &Invocation) {
        if self.budget == 0 || inv.depth > shell::MAX_DEPTH {
            // Padding a script with no-ops must not hide what comes after.
            if !self.exhausted {
                self.exhausted = true;
                self.finding(
                    Class::ShellUnparsed,
                    "sh",
                    "too many or too deeply nested commands to read".into(),
                    inv,
                );
            }
            return;
        }
        self.budget -= 1;
        let mut inv = inv.clone();
        let mut start = 0;
        while let Some(word) = words.get(start) {
            match assignment(word) {
                Some((k, v)) => inv.env.push((k.to_string(), v.to_string())),
                None => break,
            }
            start += 1;
        }
        let words = &words[start..];
        let Some(first) = words.first() else { return };
        let program = program_name(first);
        self.out.programs.push(program.clone());
        self.out.arguments.push(words[1..].to_vec());
        let args = &words[1..];
        if wrappers::unwrap(self, &program, args, &inv) {
            return;
        }
        if interp::read(self, &program, args, &inv) {
            return;
        }
        // Each family reader returns true once it recognised the program.
        let _recognised = fs::read(self, &program, args, &inv)
            || git::read(self, &program, args, &inv)
            || db::read(self, &program, args, &inv)
            || infra::read(self, &program, args, &inv)
            || cloud::read(self, &program, args, &inv)
            || paas::read(self, &program, args, &inv)
            || http::read(self, &program, args, &inv);
    }

    /// Reads a shell script (from `-c`, eval, stdin) as the shell would run it.
    pub fn script(&mut self, script: &str, inv: &Invocation, via: String) {
        let inner = inv.nested(via);
        let commands = match shell::parse(script) {
            Ok(commands) => commands,
            Err(e) => {
                self.finding(
                    Class::ShellUnparsed,
                    "sh",
                    format!("cannot parse shell string ({e})"),
                    &inner,
                );
                return;
            }
        };
        let mut previous: Option<&shell::SimpleCommand> = None;
        let mut vars: Vec<(String, Vec<String>)> = Vec::new();
        let mut cwd = (inner.cwd.clone(), inner.cwd_unknown);
        for original in &commands {
            let mut expanded = original.clone();
            expanded.words = substitute(&original.words, &vars);
            let command = &expanded;
            if self.track_state(&command.words, &mut vars, &mut cwd) {
                previous = Some(original);
                continue;
            }
            let mut next = inner.clone();
            next.cwd = cwd.0.clone();
            next.cwd_unknown = cwd.1;
            next.stdin = command.stdin.clone();
            next.stdin_operands = None;
            if command.stdin == shell::Stdin::Pipe
                && let Some(producer) = previous
            {
                if let Some(text) = self.printed_text(producer, &inner) {
                    next.stdin = shell::Stdin::Text(text);
                }
                next.stdin_operands = found_paths(&producer.words);
            }
            if command.stdin == shell::Stdin::Pipe
                && let Some(first) = command.words.first()
                && wrappers::is_shell(&program_name(first))
                && !command.words.iter().any(|w| w == "-c")
            {
                let decoded = previous.is_some_and(|p| decodes(&p.words));
                let (class, detail) = if decoded {
                    (Class::ShellObfuscated, "decoded text piped into a shell")
                } else {
                    (
                        Class::ShellStdinScript,
                        "a shell runs whatever is piped to it",
                    )
                };
                self.finding(class, &program_name(first), detail.into(), &next);
            }
            if !command.truncated_files.is_empty() && !inv.remote {
                let targets = command
                    .truncated_files
                    .iter()
                    .filter(|f| !matches!(f.as_str(), "/dev/null" | "/dev/stdout" | "/dev/stderr"))
                    .map(|f| self.target(f, &next))
                    .collect::<Vec<_>>();
                if !targets.is_empty() {
                    self.finding_targets(
                        Class::FsTruncate,
                        "sh",
                        "> redirection truncates".into(),
                        targets,
                        &next,
                    );
                }
            }
            self.command(&command.words, &next);
            previous = Some(original);
        }
    }

    /// Follows `cd`, `X=value`, `export X=value` and `for X in ...` through a
    /// script; true if the command only changed that state.
    fn track_state(
        &self,
        words: &[String],
        vars: &mut Vec<(String, Vec<String>)>,
        cwd: &mut (PathBuf, bool),
    ) -> bool {
        let Some(first) = words.first() else {
            return false;
        };
        match first.as_str() {
            "cd" | "pushd" => {
                let dir = words
                    .iter()
                    .skip(1)
                    .find(|w| !w.starts_with('-') || w.as_str() == "-");
                match dir.map(String::as_str) {
                    None => *cwd = (self.home.clone(), false),
                    Some("-") => cwd.1 = true,
                    Some(dir) => {
                        let probe = Invocation {
                            cwd: cwd.0.clone(),
                            env: Vec::new(),
                            stdin: shell::Stdin::Inherited,
                            via: Vec::new(),
                            remote: false,
                            unknown_operands: false,
                            stdin_operands: None,
                            cwd_unknown: cwd.1,
                            depth: 0,
                        };
                        match self.target(dir, &probe) {
                            Target::Path(p) => *cwd = (p, false),
                            Target::Unknown(_) | Target::Runtime(_) => cwd.1 = true,
                        }
                    }
                }
                true
            }
            "for" if words.get(2).is_some_and(|w| w == "in") => {
                vars.push((words[1].clone(), words[3..].to_vec()));
                true
            }
            "export" | "local" | "declare" | "readonly" | "typeset" => {
                for word in &words[1..] {
                    if let Some((k, v)) = assignment(word) {
                        vars.push((k.to_string(), vec![v.to_string()]));
                    }
                }
                true
            }
            _ if words.iter().all(|w| assignment(w).is_some()) => {
                for word in words {
                    if let Some((k, v)) = assignment(word) {
                        vars.push((k.to_string(), vec![v.to_string()]));
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Text a pipeline's producer prints, when the command line shows it:
    /// `echo TEXT`, `printf TEXT`, `cat <<EOF`, `cat FILE`.
    fn printed_text(&self, producer: &shell::SimpleCommand, inv: &Invocation) -> Option<String> {
        let (first, args) = producer.words.split_first()?;
        match program_name(first).as_str() {
            "echo" => Some(
                args.iter()
                    .skip_while(|a| matches!(a.as_str(), "-n" | "-e" | "-E" | "-ne" | "-en"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            "printf" => args.first().cloned(),
            "cat" if args.is_empty() => match &producer.stdin {
                shell::Stdin::Text(text) => Some(text.clone()),
                _ => None,
            },
            "cat" if !inv.remote => {
                let texts: Vec<String> = args
                    .iter()
                    .filter(|a| !a.starts_with('-'))
                    .filter_map(|a| read_small_file(&inv.cwd.join(a)))
                    .collect();
                (!texts.is_empty()).then(|| texts.join("\n"))
            }
            _ => None,
        }
    }

    pub fn finding(&mut self, class: Class, program: &str, detail: String, inv: &Invocation) {
        self.finding_targets(class, program, detail, Vec::new(), inv);
    }

    pub fn finding_targets(
        &mut self,
        class: Class,
        program: &str,
        detail: String,
        targets: Vec<Target>,
        inv: &Invocation,
    ) {
        self.out.findings.push(Finding {
            class,
            program: program.to_string(),
            detail,
            targets,
            refs: Vec::new(),
            via: inv.via.clone(),
        });
    }

    pub fn finding_refs(
        &mut self,
        class: Class,
        program: &str,
        detail: String,
        refs: Vec<String>,
        inv: &Invocation,
    ) {
        self.out.findings.push(Finding {
            class,
            program: program.to_string(),
            detail,
            targets: Vec::new(),
            refs,
            via: inv.via.clone(),
        });
    }

    /// Resolves a path word against the invocation's cwd, expanding `~` and
    /// `$HOME` and a few well-known variables; remote paths become
    /// [`Target::Unknown`], other variables [`Target::Runtime`].
    pub fn target(&self, word: &str, inv: &Invocation) -> Target {
        if inv.remote {
            return Target::Unknown(format!("remote:{word}"));
        }
        if inv.cwd_unknown
            && !word.starts_with('/')
            && !word.starts_with('~')
            && !word.starts_with('$')
        {
            return Target::Runtime(format!(
                "{word} (after cd to a directory known at run time)"
            ));
        }
        let home = self.home.to_string_lossy();
        let mut text = word.to_string();
        // Variables whose value guard knows (or whose usual value is scratch):
        // $HOME, $PWD/$(pwd), $TMPDIR, $(mktemp ...).
        let cwd = inv.cwd.to_string_lossy();
        let known: [(&str, &str); 8] = [
            ("$HOME", &home),
            ("${HOME}", &home),
            ("$PWD", &cwd),
            ("${PWD}", &cwd),
            ("$(pwd)", &cwd),
            ("$TMPDIR", "/tmp"),
            ("${TMPDIR}", "/tmp"),
            ("${TMPDIR:-/tmp}", "/tmp"),
        ];
        for (prefix, value) in known {
            if let Some(rest) = text.strip_prefix(prefix)
                && (rest.is_empty() || rest.starts_with('/'))
                && !(inv.cwd_unknown && value == cwd.as_ref())
            {
                text = format!("{value}{rest}");
                break;
            }
        }
        if text.starts_with("$(mktemp") && text.ends_with(')') && !text[2..].contains('$') {
            text = "/tmp/{mktemp}".into();
        }
        if text == "~" || text.starts_with("~/") {
            text = format!("{home}{}", &text[1..]);
        } else if text.starts_with('~') {
            // ~user: another user's home; where it is does not matter, it is not ours.
            return Target::Unknown(word.to_string());
        }
        if text.contains(':') && !text.starts_with('/') && !text.starts_with('.') {
            // host:path (scp, rsync).
            if let Some((host, _)) = text.split_once(':')
                && !host.is_empty()
                && !host.contains('/')
            {
                return Target::Unknown(word.to_string());
            }
        }
        if text.contains('$') || text.contains('`') || text.is_empty() {
            return Target::Runtime(word.to_string());
        }
        let path = inv.cwd.join(&text);
        Target::Path(glob_base(&normalize(&path)))
    }
}

/// `FOO=bar` (a shell assignment word), not `--x=y` or `=x`.
pub(crate) fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    if (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Some((name, value))
    } else {
        None
    }
}

/// The base name a program is known by: `/usr/bin/python3.12` -> `python3.12`.
pub(crate) fn program_name(word: &str) -> String {
    word.rsplit('/').next().unwrap_or(word).to_string()
}

fn is_known(program: &str) -> bool {
    let base = strip_version(program);
    wrappers::is_wrapper(program)
        || wrappers::is_shell(program)
        || interp::is_interpreter(&base)
        || KNOWN_TOOLS.contains(&base.as_str())
        || program.starts_with("mkfs")
}

/// `python3.12` -> `python`, `perl5.36` -> `perl`, `node20` -> `node`.
pub(crate) fn strip_version(program: &str) -> String {
    program
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        .to_string()
}

/// Tools a classifier reads; the exec watch set is built from these.
pub const KNOWN_TOOLS: &[&str] = &[
    "rm",
    "rmdir",
    "unlink",
    "shred",
    "find",
    "rsync",
    "dd",
    "wipefs",
    "mkswap",
    "mke2fs",
    "blkdiscard",
    "sgdisk",
    "truncate",
    "git",
    "psql",
    "mysql",
    "mariadb",
    "sqlite",
    "mongosh",
    "mongo",
    "redis-cli",
    "valkey-cli",
    "dropdb",
    "dropuser",
    "mysqladmin",
    "pg_restore",
    "clickhouse-client",
    "cockroach",
    "terraform",
    "tofu",
    "terragrunt",
    "pulumi",
    "cdk",
    "kubectl",
    "oc",
    "helm",
    "docker",
    "podman",
    "nerdctl",
    "docker-compose",
    "podman-compose",
    "aws",
    "gcloud",
    "gsutil",
    "az",
    "doctl",
    "hcloud",
    "supabase",
    "prisma",
    "drizzle-kit",
    "rails",
    "rake",
    "heroku",
    "fly",
    "flyctl",
    "railway",
    "vercel",
    "netlify",
    "gh",
    "glab",
    "npm",
    "curl",
    "wget",
    "http",
    "https",
    "xh",
    "xhs",
    "rimraf",
    "trash",
    "gio",
    "wrangler",
    "keydb-cli",
    "duckdb",
    "cqlsh",
    "snowsql",
    "clickhouse",
    "cdktf",
    "microk8s.kubectl",
    "mkfs",
    "mkfs.ext2",
    "mkfs.ext3",
    "mkfs.ext4",
    "mkfs.xfs",
    "mkfs.btrfs",
    "mkfs.vfat",
    "mkfs.fat",
    "mkfs.ntfs",
    "mkfs.f2fs",
    "mkfs.exfat",
    "mkfs.minix",
];

/// Every program base name a classifier or wrapper reads: the kernel's exec
/// watch set. Execs of anything else cannot match an exec rule by class.
pub fn watched_programs() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = KNOWN_TOOLS
        .iter()
        .chain(wrappers::WRAPPERS)
        .chain(wrappers::SHELLS)
        .chain(interp::INTERPRETERS)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Lexical normalisation: drops `.`, resolves `..` without touching the disk
/// (the file hooks see the resolved object; this is for reading argv).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
        }
    }
    out
}

/// `rm -rf dir/*` deletes everything in `dir`, so it is judged as `dir`; other
/// globs (`*.o`) are judged by the directory they are in plus the pattern.
fn glob_base(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        let Component::Normal(part) = component else {
            continue;
        };
        let text = part.to_string_lossy();
        if text.contains(['*', '?', '[']) {
            if matches!(
                text.as_ref(),
                "*" | ".*" | "*.*" | "**" | "{*,.*}" | ".[!.]*"
            ) {
                return out;
            }
            out.push(part);
            return out;
        }
        out.push(part);
    }
    out
}

/// Replaces `$X` and `${X}` with values a script assigned earlier; a word that
/// is exactly a multi-valued variable (a `for` list) becomes several words.
fn substitute(words: &[String], vars: &[(String, Vec<String>)]) -> Vec<String> {
    if vars.is_empty() {
        return words.to_vec();
    }
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut out = Vec::new();
    for word in words {
        let bare = word
            .strip_prefix("${")
            .and_then(|w| w.strip_suffix('}'))
            .or_else(|| word.strip_prefix('$'));
        if let Some(values) = bare.and_then(lookup) {
            out.extend(values.iter().cloned());
            continue;
        }
        let mut text = word.clone();
        for (name, values) in vars.iter().rev() {
            if let [value] = values.as_slice() {
                text = text
                    .replace(&format!("${{{name}}}"), value)
                    .replace(&format!("${name}/"), &format!("{value}/"));
                if text.ends_with(&format!("${name}")) {
                    let cut = text.len() - name.len() - 1;
                    text = format!("{}{value}", &text[..cut]);
                }
            }
        }
        out.push(text);
    }
    out
}

/// The paths `find START... -name x` prints: entries below its start paths.
fn found_paths(words: &[String]) -> Option<Vec<String>> {
    let (first, args) = words.split_first()?;
    if program_name(first) != "find" {
        return None;
    }
    let mut starts: Vec<String> = args
        .iter()
        .skip_while(|a| matches!(a.as_str(), "-H" | "-L" | "-P"))
        .take_while(|a| !a.starts_with('-') && *a != "(" && *a != "!")
        .map(|s| format!("{}/{{found}}", s.trim_end_matches('/')))
        .collect();
    if starts.is_empty() {
        starts.push("./{found}".into());
    }
    Some(starts)
}

/// `--dry-run`, `--dry-run=client|server`, `--dryrun`: the tool only shows
/// what it would do. Used for tools known to support it (kubectl, helm, git
/// push, rsync, aws, docker compose, rake); `--dry-run=none` is a real run.
pub(crate) fn dry_run(args: &[String]) -> bool {
    args.iter().any(|a| {
        a == "--dry-run"
            || a == "--dryrun"
            || a.strip_prefix("--dry-run=")
                .is_some_and(|v| v != "none" && v != "false")
    })
}

/// True for commands that turn encoded text back into code (`base64 -d`).
fn decodes(words: &[String]) -> bool {
    let Some(first) = words.first() else {
        return false;
    };
    let program = program_name(first);
    let flags = &words[1..];
    match program.as_str() {
        "base64" | "base32" | "basenc" => flags.iter().any(|f| {
            f == "-d"
                || f == "--decode"
                || (f.starts_with('-') && !f.starts_with("--") && f.contains('d'))
        }),
        "xxd" => flags.iter().any(|f| f == "-r"),
        "openssl" => flags.iter().any(|f| f == "-d" || f == "base64"),
        "gunzip" | "zcat" | "xz" | "bzip2" | "rev" | "tr" => true,
        _ => false,
    }
}

/// Reads a small text file a command names (SQL file, script); None if it is
/// missing, large or unreadable: the file and network hooks are the backstop.
pub(crate) fn read_small_file(path: &Path) -> Option<String> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    const LIMIT: u64 = 1024 * 1024;
    // The agent names the file and the daemon may run as root: never block on
    // it (/proc/kmsg, FIFOs) and never read more than LIMIT.
    let resolved = normalize(path);
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|p| resolved.starts_with(p))
    {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > LIMIT {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(LIMIT).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests;
