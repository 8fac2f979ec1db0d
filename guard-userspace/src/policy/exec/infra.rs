//! Infrastructure and cluster tools: terraform/tofu/terragrunt, pulumi, cdk,
//! kubectl/oc, helm, docker/podman (and compose).

use super::{
    Class, Invocation, Reader,
    args::{self, Spec},
    dry_run, wrappers,
};

pub fn read(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) -> bool {
    match program {
        "terraform" | "tofu" | "terragrunt" => terraform(reader, program, args, inv),
        "pulumi" => pulumi(reader, args, inv),
        "cdk" | "cdktf" => {
            let sub = first_operand(
                args,
                &["app", "a", "context", "c", "profile", "output", "o"],
            );
            match sub.as_deref() {
                Some("destroy") => reader.finding(
                    Class::InfraDestroy,
                    program,
                    format!("{program} destroy deletes the stack's resources"),
                    inv,
                ),
                Some("deploy") => {
                    let never = args
                        .windows(2)
                        .any(|w| w[0] == "--require-approval" && w[1] == "never")
                        || args
                            .iter()
                            .any(|a| a == "--require-approval=never" || a == "--auto-approve");
                    if never {
                        reader.finding(
                            Class::InfraAutoApprove,
                            program,
                            format!("{program} deploy without approval"),
                            inv,
                        );
                    }
                }
                _ => {}
            }
        }
        "kubectl" | "oc" | "microk8s.kubectl" => kubectl(reader, program, args, inv),
        "helm" if dry_run(args) => {}
        "helm" => {
            let sub = first_operand(
                args,
                &[
                    "namespace",
                    "n",
                    "kube-context",
                    "kubeconfig",
                    "registry-config",
                ],
            );
            if let Some(sub @ ("uninstall" | "delete" | "del" | "un")) = sub.as_deref() {
                reader.finding(
                    Class::K8sDelete,
                    program,
                    format!("helm {sub} removes a release and its resources"),
                    inv,
                );
            }
        }
        "docker" | "podman" | "nerdctl" => docker(reader, program, args, inv),
        "docker-compose" | "podman-compose" => compose(reader, program, args, inv),
        _ => return false,
    }
    true
}

/// The first word that is not an option or an option's value.
pub(crate) fn first_operand(args: &[String], long_values: &[&str]) -> Option<String> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            if !name.contains('=') && long_values.contains(&name) {
                i += 1;
            }
            i += 1;
            continue;
        }
        return Some(arg.clone());
    }
    None
}

fn terraform(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) {
    // Global options come before the subcommand: -chdir=DIR, -help, -version.
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let flags: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with('-'))
        .map(|a| a.trim_start_matches('-'))
        .collect();
    let has = |name: &str| {
        flags
            .iter()
            .any(|f| *f == name || f.starts_with(&format!("{name}=")))
    };
    // terragrunt: run-all destroy, run --all destroy, destroy-all.
    let mut words = words.as_slice();
    if matches!(words.first(), Some(&"run-all") | Some(&"run")) {
        words = &words[1..];
    }
    match words.first().copied() {
        Some("destroy" | "destroy-all") => reader.finding(
            Class::InfraDestroy,
            program,
            format!("{program} destroy deletes every resource in the state"),
            inv,
        ),
        Some("apply" | "apply-all") => {
            if has("destroy") {
                reader.finding(
                    Class::InfraDestroy,
                    program,
                    format!("{program} apply -destroy deletes every resource in the state"),
                    inv,
                );
            } else if has("replace") {
                reader.finding(
                    Class::InfraReplace,
                    program,
                    format!("{program} apply -replace destroys and recreates resources"),
                    inv,
                );
            }
            // A saved plan file applies without a prompt too.
            let plan_file = words.len() > 1;
            if has("auto-approve") || plan_file {
                reader.finding(
                    Class::InfraAutoApprove,
                    program,
                    format!("{program} apply without a review prompt"),
                    inv,
                );
            }
        }
        Some("state") => {
            if let Some(action @ ("rm" | "mv" | "push" | "replace-provider")) =
                words.get(1).copied()
            {
                reader.finding(
                    Class::InfraStateEdit,
                    program,
                    format!("{program} state {action} edits the state by hand"),
                    inv,
                );
            }
        }
        Some("force-unlock") => reader.finding(
            Class::InfraStateEdit,
            program,
            format!("{program} force-unlock breaks another run's state lock"),
            inv,
        ),
        Some("taint") => reader.finding(
            Class::InfraReplace,
            program,
            format!("{program} taint forces the resource to be recreated"),
            inv,
        ),
        Some("workspace") if words.get(1) == Some(&"delete") => reader.finding(
            Class::InfraDestroy,
            program,
            format!("{program} workspace delete drops a state"),
            inv,
        ),
        _ => {}
    }
}

fn pulumi(reader: &mut Reader, args: &[String], inv: &Invocation) {
    let parsed = args::parse(
        args,
        &Spec {
            short_values: "sCm",
            long_values: &[
                "stack",
                "cwd",
                "message",
                "target",
                "replace",
                "config-file",
                "color",
            ],
            ..Spec::default()
        },
    );
    let words: Vec<&str> = parsed.operands.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["destroy" | "down", ..] => reader.finding(
            Class::InfraDestroy,
            "pulumi",
            "pulumi destroy deletes every resource in the stack".into(),
            inv,
        ),
        ["stack", "rm", ..] => reader.finding(
            Class::InfraDestroy,
            "pulumi",
            "pulumi stack rm deletes the stack".into(),
            inv,
        ),
        ["state", "delete" | "unprotect", ..] => reader.finding(
            Class::InfraStateEdit,
            "pulumi",
            "pulumi state delete edits the state by hand".into(),
            inv,
        ),
        ["up" | "update", ..] => {
            if parsed.value(None, &["replace"]).is_some() {
                reader.finding(
                    Class::InfraReplace,
                    "pulumi",
                    "pulumi up --replace recreates resources".into(),
                    inv,
                );
            }
            if parsed.has(Some('y'), &["yes", "skip-preview"]) || parsed.has(Some('f'), &[]) {
                reader.finding(
                    Class::InfraAutoApprove,
                    "pulumi",
                    "pulumi up --yes applies without a preview".into(),
                    inv,
                );
            }
        }
        _ => {}
    }
}

fn kubectl(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) {
    if dry_run(args) {
        return;
    }
    let parsed = args::parse(
        args,
        &Spec {
            short_values: "nslfoc",
            long_values: &[
                "namespace",
                "context",
                "cluster",
                "kubeconfig",
                "server",
                "user",
                "selector",
                "filename",
                "output",
                "container",
                "token",
                "as",
                "replicas",
                "grace-period",
                "timeout",
                "field-selector",
            ],
            ..Spec::default()
        },
    );
    let Some(sub) = parsed.operands.first() else {
        return;
    };
    let detail = match sub.as_str() {
        "delete" => Some(format!(
            "{program} delete {}",
            parsed.operands[1..].join(" ")
        )),
        "drain" => Some(format!("{program} drain evicts every pod from the node")),
        "replace" if parsed.has(None, &["force"]) => Some(format!(
            "{program} replace --force deletes and recreates resources"
        )),
        "apply" if parsed.has(None, &["prune"]) => Some(format!(
            "{program} apply --prune deletes resources missing from the manifests"
        )),
        "exec" => {
            if let Some(dash) = args.iter().position(|a| a == "--") {
                wrappers::remote_shell(reader, &format!("{program} exec"), &args[dash + 1..], inv);
            }
            None
        }
        _ => None,
    };
    if let Some(detail) = detail {
        reader.finding(Class::K8sDelete, program, detail, inv);
    }
}

fn docker(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) {
    let global = args::parse(
        args,
        &Spec {
            short_values: "Hcl",
            long_values: &[
                "host",
                "context",
                "config",
                "log-level",
                "tlscacert",
                "tlscert",
                "tlskey",
            ],
            stop_at_operand: true,
        },
    );
    let rest = &args[global.rest_at..];
    let Some(sub) = rest.first() else { return };
    let sub_args = &rest[1..];
    let has = |f: &str| sub_args.iter().any(|a| a == f);
    let short = |c: char| {
        sub_args
            .iter()
            .any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains(c))
    };
    match sub.as_str() {
        "system" | "volume" | "container" | "image" | "network" | "builder" | "buildx" => {
            let action = sub_args.first().map(String::as_str).unwrap_or("");
            let volumes = has("--volumes");
            match (sub.as_str(), action) {
                ("volume", "rm" | "remove" | "prune") => reader.finding(
                    Class::ContainerVolumeDelete,
                    program,
                    format!("{program} volume {action} deletes volume data"),
                    inv,
                ),
                ("system", "prune") if volumes => reader.finding(
                    Class::ContainerVolumeDelete,
                    program,
                    format!("{program} system prune --volumes deletes unused volumes"),
                    inv,
                ),
                (_, "prune") => reader.finding(
                    Class::ContainerPrune,
                    program,
                    format!("{program} {sub} prune"),
                    inv,
                ),
                _ => {}
            }
        }
        "compose" => compose(reader, &format!("{program} compose"), sub_args, inv),
        "rm" if has("--volumes") || short('v') => reader.finding(
            Class::ContainerVolumeDelete,
            program,
            format!("{program} rm -v deletes the container's anonymous volumes"),
            inv,
        ),
        "exec" => {
            let parsed = args::parse(
                sub_args,
                &Spec {
                    short_values: "eluw",
                    long_values: &["env", "env-file", "user", "workdir", "detach-keys"],
                    stop_at_operand: true,
                },
            );
            // exec [OPTIONS] CONTAINER COMMAND...
            if let Some(command) = sub_args.get(parsed.rest_at + 1..) {
                wrappers::remote_shell(reader, &format!("{program} exec"), command, inv);
            }
        }
        _ => {}
    }
}

fn compose(reader: &mut Reader, program: &str, args: &[String], inv: &Invocation) {
    if dry_run(args) {
        return;
    }
    let global = args::parse(
        args,
        &Spec {
            short_values: "fp",
            long_values: &[
                "file",
                "project-name",
                "profile",
                "env-file",
                "project-directory",
                "ansi",
            ],
            stop_at_operand: true,
        },
    );
    let rest = &args[global.rest_at..];
    let Some(sub) = rest.first() else { return };
    let parsed = args::parse(
        &rest[1..],
        &Spec {
            short_values: "t",
            long_values: &["timeout", "rmi"],
            ..Spec::default()
        },
    );
    let removes_volumes = parsed.has(Some('v'), &["volumes"]);
    if matches!(sub.as_str(), "down" | "rm") && removes_volumes {
        reader.finding(
            Class::ContainerVolumeDelete,
            program,
            format!("{program} {sub} -v deletes the project's volumes"),
            inv,
        );
    }
}
