//! flanneld's command line, as kube-flannel.yml runs it: what weft does with each
//! flanneld flag it has no use for — one warning line saying it has no effect and
//! why, or a refusal naming the reason — and Go's single-dash spelling of flags.
//!
//! The flags weft implements (`--ip-masq`, `--kube-subnet-mgr`, `--iface`,
//! `--iface-regex`, `--public-ip`, `--subnet-file`, `--net-config-path`,
//! `--kubeconfig-file`, `--kube-api-url`, `--healthz-ip`, `--healthz-port`,
//! `--set-node-network-unavailable`, `--version`) are ordinary flags of
//! [`crate::config::Args`], each with its `FLANNELD_*` variable.

use std::ffi::OsString;

use thiserror::Error;

use crate::{annotations::PREFIX, config::FlanneldOnly};

/// A flanneld flag weft cannot honour.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refused {
    #[error(
        "--{0}: weft has no etcd mode (flanneld without --kube-subnet-mgr); it learns nodes from the Kubernetes API \
         (the default, --kube-subnet-mgr) or from a node table (--peers)"
    )]
    Etcd(&'static str),
    #[error("--public-ipv6: weft's overlay is IPv4 only")]
    PublicIpv6,
    #[error("--iface-can-reach: not supported; name the uplink with --iface (a name or an address) or --iface-regex")]
    IfaceCanReach,
    #[error("--ip-blackhole-route: not supported (weft adds no blackhole route for the node's pod CIDR); remove the flag")]
    BlackholeRoute,
    #[error(
        "--kube-annotation-prefix {0}: weft reads and writes Flannel's own annotations ({PREFIX}) only, so that weft \
         and Flannel nodes see each other"
    )]
    AnnotationPrefix(String),
}

/// The warnings to log for flags that have no effect, or the first refusal.
pub fn check(f: &FlanneldOnly) -> Result<Vec<String>, Refused> {
    let etcd = [
        ("etcd-endpoints", &f.etcd_endpoints),
        ("etcd-prefix", &f.etcd_prefix),
        ("etcd-keyfile", &f.etcd_keyfile),
        ("etcd-certfile", &f.etcd_certfile),
        ("etcd-cafile", &f.etcd_cafile),
        ("etcd-username", &f.etcd_username),
        ("etcd-password", &f.etcd_password),
    ];
    if let Some((flag, _)) = etcd.iter().find(|(_, v)| v.is_some()) {
        return Err(Refused::Etcd(flag));
    }
    if f.public_ipv6.is_some() {
        return Err(Refused::PublicIpv6);
    }
    if f.iface_can_reach.is_some() {
        return Err(Refused::IfaceCanReach);
    }
    if f.ip_blackhole_route == Some(true) {
        return Err(Refused::BlackholeRoute);
    }
    if let Some(p) = &f.kube_annotation_prefix
        && p.trim_end_matches('/') != PREFIX
    {
        return Err(Refused::AnnotationPrefix(p.clone()));
    }
    let mut warnings = Vec::new();
    let mut no_effect = |flag: &str, given: bool, why: &str| {
        if given {
            warnings.push(format!("--{flag} has no effect in weft: {why}"));
        }
    };
    no_effect(
        "subnet-lease-renew-margin",
        f.subnet_lease_renew_margin.is_some(),
        "leases are etcd mode's; in Kubernetes mode the Node's podCIDR is the lease",
    );
    let no_iptables = "weft installs no iptables rules (masquerade runs in its eBPF programs)";
    no_effect("iptables-resync", f.iptables_resync.is_some(), no_iptables);
    no_effect("iptables-forward-rules", f.iptables_forward_rules.is_some(), no_iptables);
    no_effect(
        "ip-masq-fully-random-disable",
        f.ip_masq_fully_random_disable == Some(true),
        "weft always picks NAT ports at random, as --random-fully (turning that off brings back the SNAT port race)",
    );
    no_effect("ip-blackhole-route", f.ip_blackhole_route == Some(false), "weft adds no blackhole route");
    let klog = "it is klog's; weft's log level is set with RUST_LOG (e.g. RUST_LOG=debug)";
    no_effect("v", f.klog_v.is_some(), klog);
    no_effect("vmodule", f.vmodule.is_some(), klog);
    no_effect("log_backtrace_at", f.log_backtrace_at.is_some(), klog);
    Ok(warnings)
}

/// Go's flag package takes `-name` as well as `--name`: rewrites a single-dash long
/// flag to the double-dash form clap parses. Short flags (`-h`, `-V`) and values are
/// left alone; after `--` nothing is touched.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        let rewritten = match arg.to_str() {
            _ if rest => None,
            Some("--") => {
                rest = true;
                None
            }
            Some(s) if s.starts_with('-') && !s.starts_with("--") => {
                let name = s[1..].split('=').next().unwrap_or_default();
                // klog's `-v` is flanneld's only one-letter flag.
                let long = name == "v" || (name.len() > 1 && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()));
                long.then(|| format!("-{s}").into())
            }
            _ => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Args;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let argv = std::iter::once("weft-agent").chain(args.iter().copied()).map(OsString::from);
        Args::try_parse_from(normalize(argv))
    }

    #[test]
    fn kube_flannel_yml_args_parse() {
        let a = parse(&["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"]).unwrap();
        assert!(a.ip_masq && a.kube_subnet_mgr);
        assert_eq!(a.healthz_port, 8081);
        assert_eq!(check(&a.flanneld), Ok(vec![]));
        // Go's spellings: a single dash, and booleans with a value.
        let a = parse(&["-ip-masq=false", "-kube-subnet-mgr", "-iface=eth1", "--iface", "10.0.0.2"]).unwrap();
        assert!(!a.ip_masq && a.kube_subnet_mgr);
        assert_eq!(a.iface, ["eth1", "10.0.0.2"]);
        assert!(parse(&["--kube-subnet-mgr", "--peers", "/x"]).is_err(), "two modes at once");
    }

    #[test]
    fn flags_without_effect_warn_once_each() {
        let a =
            parse(&["--iptables-resync=5", "--iptables-forward-rules=false", "--ip-masq-fully-random-disable", "--v=2"]).unwrap();
        let w = check(&a.flanneld).unwrap();
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("--iptables-resync has no effect in weft: weft installs no iptables rules"), "{w:?}");
        assert!(w[3].contains("RUST_LOG"), "{w:?}");
        let a = parse(&["--kube-annotation-prefix=flannel.alpha.coreos.com/"]).unwrap();
        assert_eq!(check(&a.flanneld), Ok(vec![]), "Flannel's own prefix is weft's");
    }

    #[test]
    fn flags_weft_cannot_honour_are_refused_by_name() {
        let refused = |args: &[&str]| check(&parse(args).unwrap().flanneld).unwrap_err().to_string();
        assert!(refused(&["--etcd-endpoints=http://127.0.0.1:2379"]).starts_with("--etcd-endpoints: weft has no etcd mode"));
        assert!(refused(&["-etcd-prefix", "/coreos.com/network"]).starts_with("--etcd-prefix:"));
        assert_eq!(refused(&["--public-ipv6=fd00::1"]), "--public-ipv6: weft's overlay is IPv4 only");
        assert!(refused(&["--iface-can-reach=10.0.0.1"]).contains("--iface"));
        assert!(refused(&["--ip-blackhole-route"]).starts_with("--ip-blackhole-route: not supported"));
        assert!(refused(&["--kube-annotation-prefix=example.com"]).contains("Flannel's own annotations"));
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        let n = |v: &[&str]| {
            normalize(v.iter().map(OsString::from)).into_iter().map(|s| s.into_string().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(
            n(&["weft-agent", "-ip-masq", "-v=2", "-V", "-h", "--iface", "-x"]),
            ["weft-agent", "--ip-masq", "--v=2", "-V", "-h", "--iface", "-x"]
        );
        assert_eq!(n(&["a", "--", "-ip-masq"]), ["a", "--", "-ip-masq"]);
    }
}
