//! The shipped Kubernetes manifests: `kubernetes-validate --strict` accepts
//! every core resource, the probe DaemonSet is never privileged and adds only
//! the capabilities the probe needs, the PodMonitor and Service select the
//! probe's pods and port, and the profiles ConfigMap carries profiles/ exactly.

#[path = "util/fleet.rs"]
mod fleet;

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn k8s(file: &str) -> PathBuf {
    fleet::deploy("kubernetes").join(file)
}

fn validator() -> PathBuf {
    let bin = fleet::repo().join(".venv/bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} missing: ./scripts/setup.sh installs it (tests/python/requirements.txt)",
        bin.display()
    );
    bin
}

/// Core-API manifests (kubernetes-validate has schemas for these).
const CORE: [&str; 5] = [
    "namespace.yaml",
    "profiles-configmap.yaml",
    "probe-daemonset.yaml",
    "probe-service.yaml",
    "preflight-job.yaml",
];

#[test]
fn core_manifests_pass_strict_validation() {
    let out = Command::new(validator())
        .arg("--strict")
        .args(CORE.map(k8s))
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        CORE.len(),
        "{text}"
    );
    assert!(!text.contains("WARN"), "{text}");
}

#[test]
fn strict_validation_can_fail() {
    let dir = std::env::temp_dir().join(format!("headroom-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let text = fleet::read(&k8s("probe-daemonset.yaml")).replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFileSystem: true",
    );
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(validator())
        .arg("--strict")
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "a misspelt field must fail --strict");
}

fn probe_container(ds: &Value) -> &Value {
    let c = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(c.len(), 1);
    &c[0]
}

#[test]
fn probe_daemonset_is_least_privilege() {
    let raw = fleet::read(&k8s("probe-daemonset.yaml"));
    assert!(!raw.contains("privileged: true"), "never privileged");
    let ds = fleet::yaml(&k8s("probe-daemonset.yaml"));
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = probe_container(&ds);
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_yaml::from_str::<Value>("[ALL]").unwrap()
    );
    // The same set as the systemd unit.
    assert_eq!(
        sc["capabilities"]["add"],
        serde_yaml::from_str::<Value>("[BPF, PERFMON, SYS_PTRACE, DAC_READ_SEARCH]").unwrap()
    );
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}");
        }
    }
    // hostPID / hostNetwork only with a comment saying why, right above.
    for key in ["hostPID: true", "hostNetwork: true"] {
        assert_eq!(pod[key.split(':').next().unwrap()], true);
        let lines: Vec<&str> = raw.lines().collect();
        let i = lines.iter().position(|l| l.trim() == key).unwrap();
        assert!(
            lines[i - 1].trim().starts_with('#'),
            "{key} has no reason above it"
        );
    }
    assert_eq!(pod["hostIPC"], Value::Null, "no hostIPC");
    assert_eq!(c["args"][0], "probe");
}

#[test]
fn service_and_podmonitor_select_the_probe() {
    let ds = fleet::yaml(&k8s("probe-daemonset.yaml"));
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let ports: Vec<&str> = probe_container(&ds)["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let matches = |sel: &Value| {
        sel.as_mapping()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k.as_str().unwrap()) == Some(v))
    };

    let svc = fleet::yaml(&k8s("probe-service.yaml"));
    assert!(matches(&svc["spec"]["selector"]));
    assert!(ports.contains(&svc["spec"]["ports"][0]["targetPort"].as_str().unwrap()));

    let pm = fleet::yaml(&k8s("probe-podmonitor.yaml"));
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert!(matches(&pm["spec"]["selector"]["matchLabels"]));
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert!(ports.contains(&ep["port"].as_str().unwrap()));
    assert_eq!(ep["path"], "/metrics");
    // The job label comes from this pod label; the alert rules select job=~"headroom-probe.*".
    let job = labels[pm["spec"]["jobLabel"].as_str().unwrap()]
        .as_str()
        .unwrap();
    assert!(job.starts_with("headroom-probe"), "job would be {job}");
    // Only fields the PodMonitor CRD defines (kubernetes-validate has no schema for it).
    let spec_keys: Vec<&str> = pm["spec"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    for k in &spec_keys {
        assert!(
            [
                "jobLabel",
                "selector",
                "podMetricsEndpoints",
                "namespaceSelector",
                "podTargetLabels"
            ]
            .contains(k),
            "{k}"
        );
    }
}

#[test]
fn kustomization_lists_every_resource() {
    let k = fleet::yaml(&k8s("kustomization.yaml"));
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in &listed {
        assert!(k8s(r).exists(), "{r}");
    }
    let mut files: Vec<String> = std::fs::read_dir(fleet::deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml" && f != "preflight-job.yaml")
        .collect();
    files.sort();
    let mut l: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    l.sort();
    assert_eq!(
        files, l,
        "every manifest but the example Job is in the kustomization"
    );
}

/// The ConfigMap as it must be: one key per profiles/*.yaml, the file's text.
fn expected_configmap() -> String {
    let mut profiles = BTreeMap::new();
    for e in std::fs::read_dir(fleet::repo().join("profiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            profiles.insert(
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fleet::read(&p),
            );
        }
    }
    let mut out = String::from(
        "# Generated from profiles/*.yaml by tests/fleet_kubernetes.rs; to refresh:\n\
         # HEADROOM_BLESS=1 cargo test --test fleet_kubernetes\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: headroom-profiles\n  namespace: headroom\n  labels:\n    app.kubernetes.io/part-of: headroom\ndata:\n",
    );
    if profiles.is_empty() {
        out.push_str("  {}\n");
    }
    for (name, text) in profiles {
        out.push_str(&format!("  {name}: |\n"));
        for line in text.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

#[test]
fn profiles_configmap_carries_profiles_exactly() {
    let want = expected_configmap();
    let path = k8s("profiles-configmap.yaml");
    if std::env::var_os("HEADROOM_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    assert_eq!(
        fleet::read(&path),
        want,
        "stale: HEADROOM_BLESS=1 cargo test --test fleet_kubernetes"
    );
    // And it parses back to the very files.
    let cm = fleet::yaml(&path);
    for e in std::fs::read_dir(fleet::repo().join("profiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = fleet::read(&p);
            assert_eq!(
                cm["data"][name.as_str()].as_str().map(|s| s.trim_end()),
                Some(text.trim_end())
            );
        }
    }
    // The alerts name the c100k profile: it must be there once profiles have landed.
    if std::fs::read_dir(fleet::repo().join("profiles"))
        .unwrap()
        .next()
        .is_some()
    {
        assert!(
            cm["data"]["c100k.yaml"].is_string(),
            "c100k.yaml not in the ConfigMap"
        );
    }
}

/// Every image the manifests run is the one deploy/container/Dockerfile
/// builds, at this version, from the .deb (whose binary is its entrypoint):
/// nothing references an artifact the repository has no recipe for.
#[test]
fn manifests_run_the_image_the_repo_builds() {
    let want = format!("ghcr.io/headroom-rs/headroom:{}", env!("CARGO_PKG_VERSION"));
    let mut images = Vec::new();
    for entry in std::fs::read_dir(fleet::deploy("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        for line in fleet::read(&path).lines() {
            if let Some(image) = line.trim().strip_prefix("image:") {
                images.push((
                    path.file_name().unwrap().to_owned(),
                    image.trim().to_string(),
                ));
            }
        }
    }
    let mut files: Vec<_> = images.iter().map(|(f, _)| f.to_str().unwrap()).collect();
    files.sort_unstable();
    assert_eq!(files, ["preflight-job.yaml", "probe-daemonset.yaml"]);
    for (file, image) in &images {
        assert_eq!(image, &want, "{file:?}");
    }

    let docker = fleet::read(&fleet::deploy("container/Dockerfile"));
    assert!(
        docker.contains(&format!("-t {want} target/debian")),
        "the Dockerfile's build line names {want}"
    );
    let instr: Vec<&str> = docker
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(
        instr,
        [
            "FROM debian:bookworm-slim",
            "COPY headroom_*.deb /tmp/",
            "RUN apt-get update \\",
            "ENTRYPOINT [\"/usr/bin/headroom\"]",
            "CMD [\"--help\"]",
        ]
    );
    // The .deb build.sh makes is what COPY picks up, with the binary where
    // ENTRYPOINT looks.
    assert!(fleet::read(&fleet::deploy("deb/build.sh"))
        .contains("Output: target/debian/headroom_VERSION-1_ARCH.deb"));
    let cargo = fleet::read(&fleet::repo().join("Cargo.toml"));
    assert!(cargo.contains(r#"["target/release/headroom", "usr/bin/", "755"]"#));
}
