//! The deployment manifests: valid for Kubernetes by a validator nobody here wrote
//! (`kubernetes-validate --strict`, the API's own OpenAPI schemas), and consistent
//! with the agent they deploy — its net-conf.json parses, its command line parses,
//! and every path the agent writes or pins to is a host path the pod mounts.
//! node-policy.yaml is validated here too; its CEL is run in node_policy.rs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, ensure};
use clap::Parser;
use serde_json::Value;
use weft_agent::{config::Args, netconf};
use weft_e2e::{manifests, prereq};

fn manifest_path() -> PathBuf {
    manifests::path("weft.yaml")
}

fn documents() -> Result<Vec<Value>> {
    manifests::documents("weft.yaml")
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind).ok_or_else(|| anyhow!("no {kind} in the manifest"))
}

fn validate(path: &Path) -> Result<(bool, String)> {
    prereq::require();
    let out = Command::new("kubernetes-validate").arg("--strict").arg(path).output().context("running kubernetes-validate")?;
    Ok((out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))))
}

#[test]
fn manifests_pass_strict_schema_validation() -> Result<()> {
    let (ok, report) = validate(&manifest_path())?;
    ensure!(ok, "kubernetes-validate --strict rejects manifests/weft.yaml:\n{report}");
    for kind in ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"] {
        ensure!(report.contains(&format!("resource {}/", kind.to_lowercase())), "{kind} not validated:\n{report}");
    }
    // The validator does reject: the same DaemonSet with a misspelt field fails.
    let mut docs = documents()?;
    let ds = docs.iter_mut().find(|d| d["kind"] == "DaemonSet").ok_or_else(|| anyhow!("no DaemonSet"))?;
    ds["spec"]["template"]["spec"]["hostNetwrok"] = Value::Bool(true);
    let bad = std::env::temp_dir().join(format!("weft-bad-manifest-{}.yaml", std::process::id()));
    std::fs::write(&bad, serde_norway::to_string(ds)?)?;
    let result = validate(&bad);
    let _ = std::fs::remove_file(&bad);
    let (ok, report) = result?;
    ensure!(!ok && report.contains("hostNetwrok"), "a misspelt field passed validation:\n{report}");
    Ok(())
}

/// node-policy.yaml (its CEL is evaluated in tests/node_policy.rs) is valid for the
/// oldest Kubernetes it documents, 1.30 (admissionregistration.k8s.io/v1), and the
/// current one; its matchCondition names weft.yaml's ServiceAccount.
#[test]
fn node_policy_passes_strict_schema_validation_and_names_wefts_service_account() -> Result<()> {
    let path = manifest_path().with_file_name("node-policy.yaml");
    for version in [None, Some("1.30.0")] {
        prereq::require();
        let mut cmd = Command::new("kubernetes-validate");
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let out = cmd.arg(&path).output().context("running kubernetes-validate")?;
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success(), "kubernetes-validate --strict ({version:?}) rejects node-policy.yaml:\n{report}");
        for kind in ["validatingadmissionpolicy", "validatingadmissionpolicybinding"] {
            ensure!(
                report.contains(&format!("resource {kind}/weft-own-node-only")),
                "{kind} not validated ({version:?}):\n{report}"
            );
        }
    }
    let docs = documents()?;
    let sa = find(&docs, "ServiceAccount")?;
    let user = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().unwrap_or_default(),
        sa["metadata"]["name"].as_str().unwrap_or_default()
    );
    let pod = &find(&docs, "DaemonSet")?["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"], "the agent runs as that ServiceAccount");
    assert_ne!(
        pod["automountServiceAccountToken"], false,
        "the agent needs its pod-bound token (it carries the node-name claim)"
    );
    let policy = std::fs::read_to_string(&path)?;
    ensure!(policy.contains(&format!("request.userInfo.username == '{user}'")), "node-policy.yaml does not match {user}");
    Ok(())
}

#[test]
fn configmap_is_a_net_conf_the_agent_accepts() -> Result<()> {
    let docs = documents()?;
    let text = find(&docs, "ConfigMap")?["data"]["net-conf.json"].as_str().ok_or_else(|| anyhow!("no net-conf.json"))?;
    let conf = netconf::parse(text).map_err(|e| anyhow!("net-conf.json: {e}"))?;
    assert_eq!(conf.network.to_string(), "10.244.0.0/16", "kubeadm's and Flannel's default pod network");
    assert!(conf.warnings.is_empty(), "keys without effect: {:?}", conf.warnings);
    Ok(())
}

/// The container's command line (with NODE_NAME as the downward API sets it) parses,
/// and whatever it configures lives on the host: bpffs pins, subnet.env, the conflist
/// and net-conf.json are all under mounted volumes of the right kind.
#[test]
fn daemonset_runs_the_agent_with_host_paths_mounted() -> Result<()> {
    let docs = documents()?;
    let pod = &find(&docs, "DaemonSet")?["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the agent configures the node's own network namespace");
    let container = pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "weft-agent"))
        .ok_or_else(|| anyhow!("no weft-agent container"))?;
    // privileged for the sysctls, the reason next to it in the manifest.
    assert_eq!(container["securityContext"]["privileged"], true);
    let env_node = container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == "NODE_NAME"));
    assert_eq!(env_node.map(|v| &v["valueFrom"]["fieldRef"]["fieldPath"]), Some(&Value::from("spec.nodeName")));

    let mut argv = vec!["weft-agent".to_string(), "--node-name=n1".to_string()];
    argv.extend(container["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)));
    let args = Args::try_parse_from(&argv).map_err(|e| anyhow!("{argv:?}: {e}"))?;
    assert!(args.peers.is_none(), "the DaemonSet runs Kubernetes mode");

    let volumes = pod["volumes"].as_array().ok_or_else(|| anyhow!("no volumes"))?;
    let mounts = container["volumeMounts"].as_array().ok_or_else(|| anyhow!("no volumeMounts"))?;
    // (path the agent uses, must the volume be the host's?)
    let needs = [
        (args.bpffs_dir.clone(), true),
        (args.subnet_file.clone(), true),
        (args.cni_conf_dir.join("10-weft.conflist"), true),
        (args.cni_conf_template.clone().unwrap_or_default(), false),
        (args.net_config_path.clone(), false),
        // The runtime's CNI results: who each pod is, for the source check.
        (args.cni_cache_dir.join("results"), true),
    ];
    for (path, on_host) in needs {
        let mount = mounts
            .iter()
            .filter(|m| m["mountPath"].as_str().is_some_and(|p| path.starts_with(p)))
            .max_by_key(|m| m["mountPath"].as_str().map(str::len))
            .ok_or_else(|| anyhow!("{}: not under any volumeMount", path.display()))?;
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .ok_or_else(|| anyhow!("volumeMount {} has no volume", mount["name"]))?;
        assert_eq!(volume.get("hostPath").is_some(), on_host, "{}: volume {volume}", path.display());
        if on_host {
            let host = volume["hostPath"]["path"].as_str().unwrap_or_default();
            assert_eq!(host, mount["mountPath"], "{}: mounted at the same path as on the host", path.display());
        }
    }
    // Pins made in the pod must land in the host's bpffs (and a mount the init
    // container makes must reach the host).
    let bpffs = mounts.iter().find(|m| m["mountPath"] == "/sys/fs/bpf").ok_or_else(|| anyhow!("no /sys/fs/bpf mount"))?;
    assert_eq!(bpffs["mountPropagation"], "HostToContainer");
    let init = pod["initContainers"].as_array().and_then(|c| c.first()).ok_or_else(|| anyhow!("no init container"))?;
    assert!(init["volumeMounts"].as_array().into_iter().flatten().any(|m| m["mountPropagation"] == "Bidirectional"));
    Ok(())
}

/// Every container runs the image `cargo xtask image` writes (its name and the
/// workspace version), never pulled when the node has it; the init containers'
/// commands are weft-agent's init subcommands as it parses them.
#[test]
fn containers_run_the_archives_image_and_its_subcommands() -> Result<()> {
    let docs = documents()?;
    let pod = &find(&docs, "DaemonSet")?["spec"]["template"]["spec"];
    let image = format!("weft-agent:{}", env!("CARGO_PKG_VERSION"));
    let inits = pod["initContainers"].as_array().ok_or_else(|| anyhow!("no init containers"))?;
    let all = inits.iter().chain(pod["containers"].as_array().into_iter().flatten());
    for c in all {
        assert_eq!(c["image"], Value::from(image.as_str()), "{}: the archive's image", c["name"]);
        assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{}: an imported image is not pulled", c["name"]);
    }
    let mut subcommands = Vec::new();
    for c in inits {
        let argv: Vec<String> =
            c["command"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
        assert_eq!(argv.first().map(String::as_str), Some("/usr/local/bin/weft-agent"), "{}: no shell in the image", c["name"]);
        assert!(weft_agent::init::wanted(&argv), "{}: {argv:?} is no init subcommand", c["name"]);
        weft_agent::init::Init::try_parse_from(&argv).map_err(|e| anyhow!("{argv:?}: {e}"))?;
        subcommands.push(argv[1].clone());
    }
    assert_eq!(subcommands, ["mount-bpffs", "install-cni-plugins"]);
    Ok(())
}

/// The ConfigMap's cni-conf.json is manifests/cni-conf.json, which the agent completes
/// into the conflist it writes without a template; the agent reads it where the
/// ConfigMap is mounted.
#[test]
fn cni_conf_json_is_the_template_the_agent_completes() -> Result<()> {
    let docs = documents()?;
    let text = find(&docs, "ConfigMap")?["data"]["cni-conf.json"].as_str().ok_or_else(|| anyhow!("no cni-conf.json"))?;
    let in_map: Value = serde_json::from_str(text)?;
    let file: Value = serde_json::from_str(&std::fs::read_to_string(manifest_path().with_file_name("cni-conf.json"))?)?;
    assert_eq!(in_map, file, "the ConfigMap's cni-conf.json and manifests/cni-conf.json differ");
    let subnet = "10.244.7.0/24".parse()?;
    let completed = weft_agent::cni::conflist_from_template(&in_map, subnet, 1450, None)?;
    assert_eq!(completed, weft_agent::cni::conflist(subnet, 1450, None));

    let pod = &find(&docs, "DaemonSet")?["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    let mut argv = vec!["weft-agent".to_string(), "--node-name=n1".to_string()];
    argv.extend(agent["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)));
    let args = Args::try_parse_from(&argv).map_err(|e| anyhow!("{argv:?}: {e}"))?;
    let template = args.cni_conf_template.ok_or_else(|| anyhow!("no --cni-conf-template"))?;
    let mount = agent["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"].as_str().is_some_and(|p| template.parent() == Some(Path::new(p))))
        .ok_or_else(|| anyhow!("{} is not in a mounted directory", template.display()))?;
    let volume = pod["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == mount["name"]);
    assert_eq!(
        volume.map(|v| &v["configMap"]["name"]),
        Some(&Value::from("weft-cfg")),
        "{} from the ConfigMap",
        template.display()
    );
    Ok(())
}

/// Scheduling, probes and resources as an operator expects of a node agent: Linux
/// nodes only, every taint tolerated, node-critical priority; the probes reach the
/// address and port the agent serves on; requests within what was measured, memory
/// limited, no CPU limit.
#[test]
fn daemonset_schedules_probes_and_sizes_the_agent() -> Result<()> {
    let docs = documents()?;
    let ds = find(&docs, "DaemonSet")?;
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["operator"] == "Exists" && t.get("effect").is_none()))
    );
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let exprs = terms[0]["matchExpressions"].as_array().ok_or_else(|| anyhow!("no node affinity"))?;
    assert!(
        exprs
            .iter()
            .any(|e| e["key"] == "kubernetes.io/os" && e["operator"] == "In" && e["values"] == serde_json::json!(["linux"]))
    );
    let agent = &pod["containers"][0];
    let mut argv = vec!["weft-agent".to_string(), "--node-name=n1".to_string()];
    argv.extend(agent["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)));
    let args = Args::try_parse_from(&argv).map_err(|e| anyhow!("{argv:?}: {e}"))?;
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["port"], args.healthz_port, "{probe} port");
        assert_eq!(get["host"], Value::from(args.healthz_ip.to_string()), "{probe} host");
    }
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
    let res = &agent["resources"];
    assert_eq!((res["requests"]["cpu"].as_str(), res["requests"]["memory"].as_str()), (Some("100m"), Some("64Mi")));
    assert_eq!(res["limits"]["memory"], "128Mi");
    assert!(res["limits"].get("cpu").is_none(), "no CPU limit");
    Ok(())
}

fn allocator_path() -> PathBuf {
    manifests::path("allocator.yaml")
}

fn allocator_documents() -> Result<Vec<Value>> {
    manifests::documents("allocator.yaml")
}

/// The allocator's manifest: valid (strict), its command line parses as
/// `allocate-node-cidrs`, it reads weft.yaml's ConfigMap, runs on the host's
/// network tolerating every taint, and its RBAC is exactly what it calls:
/// Nodes get/list/watch/patch, Events create, Leases get/create/update in its
/// own namespace only.
#[test]
fn allocator_manifest_is_valid_and_grants_exactly_what_it_uses() -> Result<()> {
    let (ok, report) = validate(&allocator_path())?;
    ensure!(ok, "kubernetes-validate --strict rejects manifests/allocator.yaml:\n{report}");
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"] {
        ensure!(report.contains(&format!("resource {}/", kind.to_lowercase())), "{kind} not validated:\n{report}");
    }
    let docs = allocator_documents()?;
    let rules = |kind: &str| -> Result<Vec<(String, String, Vec<String>)>> {
        let doc = find(&docs, kind)?;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(doc["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| {
                let verbs: Vec<String> = r["verbs"].as_array().into_iter().flatten().map(s).collect();
                let groups: Vec<String> = r["apiGroups"].as_array().into_iter().flatten().map(s).collect();
                let resources: Vec<String> = r["resources"].as_array().into_iter().flatten().map(s).collect();
                groups.into_iter().flat_map(move |g| {
                    let verbs = verbs.clone();
                    resources.clone().into_iter().map(move |res| (g.clone(), res, verbs.clone()))
                })
            })
            .collect())
    };
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules("ClusterRole")?,
        [
            (String::new(), "nodes".to_string(), v(&["get", "list", "watch", "patch"])),
            ("events.k8s.io".to_string(), "events".to_string(), v(&["create"])),
        ]
    );
    assert_eq!(rules("Role")?, [("coordination.k8s.io".to_string(), "leases".to_string(), v(&["get", "create", "update"]))]);
    let deployment = find(&docs, "Deployment")?;
    assert_eq!(find(&docs, "Role")?["metadata"]["namespace"], deployment["metadata"]["namespace"], "the Lease's namespace");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "it runs before any node has pod networking");
    assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]), "not-ready nodes included");
    let c = &pod["containers"][0];
    let argv: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    assert!(weft_agent::allocator::wanted(&argv), "{argv:?}");
    let args = weft_agent::allocator::AllocateArgs::try_parse_from(&argv[1..]).map_err(|e| anyhow!("{argv:?}: {e}"))?;
    assert_eq!(args.net_config_path, Path::new("/etc/weft/net-conf.json"));
    assert_eq!(pod["volumes"][0]["configMap"]["name"], find(&documents()?, "ConfigMap")?["metadata"]["name"]);
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/weft");
    let port = args.health_addr.port();
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);
    let envs: Vec<&str> = c["env"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(envs, ["POD_NAMESPACE", "POD_NAME"], "the Lease's namespace and the replica's identity");
    Ok(())
}
