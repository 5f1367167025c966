//! The deployment manifests: valid for Kubernetes by a validator nobody here wrote
//! (`kubernetes-validate --strict`, the API's own OpenAPI schemas), and consistent
//! with the agent they deploy — its net-conf.json parses, its command line parses,
//! and every path the agent writes or pins to is a host path the pod mounts.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, ensure};
use clap::Parser;
use serde_json::Value;
use weft_agent::{config::Args, netconf};
use weft_e2e::prereq;

fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/weft.yaml")
}

fn documents() -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(manifest_path())?;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
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
        (args.net_config_path.clone(), false),
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
