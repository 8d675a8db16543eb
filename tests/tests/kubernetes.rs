//! `examples/kubernetes/wharf-sidecar.yaml`, checked without a cluster: the
//! manifests parse; the probes ask Wharf's paths on the port the embedded
//! `wharf.toml` serves, at an address the kubelet can reach; the app talks
//! to Wharf over loopback and other pods cannot; the grace period covers
//! the preStop step and Wharf's drain; the data dir is a writable volume;
//! and the embedded config passes `wharf check-config` (plugin paths moved
//! from the image's to the build's).

use std::net::SocketAddr;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use wharf_tests::{plugin, root, wharf_bin};

const MANIFEST: &str = "examples/kubernetes/wharf-sidecar.yaml";
/// Where the image keeps its plugins (Containerfile).
const IMAGE_PLUGINS: &str = "/usr/lib/wharf/plugins/";
/// The plugins the image ships.
const SHIPPED: [&str; 5] = ["memcached", "http", "wharf", "replica", "cassandra"];
/// Wharf's drain after SIGTERM, in seconds (host/wharf/src/cli/mod.rs,
/// `serve`): the HTTP API's connections, the gRPC API's calls (when
/// enabled), then the delivery loops, each up to 10 s.
const HTTP_DRAIN_S: u64 = 10;
const GRPC_DRAIN_S: u64 = 10;
const DELIVERY_DRAIN_S: u64 = 10;

/// Every document of the manifest, as JSON values.
fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(MANIFEST)).expect("the manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{MANIFEST}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The workload's pod template spec (a Pod's own spec).
fn pod_spec(workload: &Value) -> &Value {
    match workload["kind"].as_str() {
        Some("Pod") => &workload["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["containers", "initContainers"].iter().flat_map(|k| pod[k].as_array().into_iter().flatten()).collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// Everything the checks look at, found once.
struct Example {
    workload: Value,
    wharf: Value,
    config_map: Value,
    toml_text: String,
    toml: toml::Table,
    http: SocketAddr,
}

fn example() -> Example {
    let docs = documents();
    let workloads: Vec<&Value> =
        ["Pod", "Deployment", "StatefulSet"].iter().flat_map(|k| of_kind(&docs, k)).collect();
    assert_eq!(workloads.len(), 1, "one workload in {MANIFEST}");
    let workload = workloads[0].clone();
    let pod = pod_spec(&workload);
    let wharf = containers(pod)
        .into_iter()
        .find(|c| c["image"].as_str().is_some_and(|i| i.contains("/wharf:")))
        .expect("a container of the wharf image")
        .clone();
    // The config: the ConfigMap volume mounted where `--config` points.
    let args: Vec<&str> =
        wharf["args"].as_array().expect("wharf's args").iter().map(|a| str_of(a, "arg")).collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("serve --config <file>");
    assert_eq!(args.first(), Some(&"serve"), "{args:?}");
    let (dir, file) = config_path.rsplit_once('/').expect("an absolute config path");
    let mount = wharf["volumeMounts"]
        .as_array()
        .expect("wharf's volume mounts")
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    let volume = pod["volumes"]
        .as_array()
        .expect("pod volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the config volume");
    let map_name = str_of(&volume["configMap"]["name"], "the config volume's ConfigMap");
    let config_map = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == map_name)
        .unwrap_or_else(|| panic!("no ConfigMap {map_name}"))
        .clone();
    let toml_text = str_of(&config_map["data"][file], "the ConfigMap's wharf.toml").to_string();
    let toml: toml::Table = toml_text.parse().unwrap_or_else(|e| panic!("the embedded {file}: {e}"));
    let http =
        toml.get("server").and_then(|s| s.get("http")).and_then(toml::Value::as_str).expect("server.http");
    let http: SocketAddr = http.parse().unwrap_or_else(|e| panic!("server.http {http}: {e}"));
    Example { workload, wharf, config_map, toml_text, toml, http }
}

#[test]
fn the_probes_ask_wharfs_own_paths_on_the_port_its_config_serves() {
    let ex = example();
    let port = u64::from(ex.http.port());
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &ex.wharf[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"].as_u64(), Some(port), "{probe} port vs server.http {}", ex.http);
    }
    if ex.wharf["startupProbe"].is_object() {
        assert_eq!(ex.wharf["startupProbe"]["httpGet"]["port"].as_u64(), Some(port), "startupProbe");
    }
    let declared: Vec<u64> = ex.wharf["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert!(declared.contains(&port), "containerPort {port} not declared: {declared:?}");
    // The kubelet connects to the pod IP from the node, never over the
    // pod's loopback.
    assert!(!ex.http.ip().is_loopback(), "server.http {} is unreachable for the kubelet's probes", ex.http);
}

#[test]
fn the_app_reaches_wharf_over_loopback_and_other_pods_cannot() {
    let ex = example();
    let docs = documents();
    let pod = pod_spec(&ex.workload);
    let loopback = [format!("127.0.0.1:{}", ex.http.port()), format!("localhost:{}", ex.http.port())];
    let apps: Vec<&Value> = containers(pod).into_iter().filter(|c| c["name"] != ex.wharf["name"]).collect();
    assert!(!apps.is_empty(), "no app container beside wharf");
    let uses_loopback = apps.iter().any(|c| {
        c["env"].as_array().into_iter().flatten().any(|e| {
            let v = e["value"].as_str().unwrap_or("");
            loopback.iter().any(|l| v.contains(l.as_str()))
        })
    });
    assert!(uses_loopback, "no app container is pointed at {}", loopback[0]);

    // A NetworkPolicy on the pod's labels whose ingress rules all name
    // ports, none of them Wharf's.
    let labels = &ex.workload["spec"]["template"]["metadata"]["labels"];
    let policy = of_kind(&docs, "NetworkPolicy")
        .into_iter()
        .find(|p| {
            let selector = p["spec"]["podSelector"]["matchLabels"].as_object();
            selector.is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
        })
        .expect("a NetworkPolicy selecting the pod");
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    for rule in rules {
        let ports = rule["ports"].as_array().expect("each ingress rule names its ports");
        assert!(!ports.is_empty(), "a rule with no ports admits every port");
        for p in ports {
            assert_ne!(
                p["port"].as_u64(),
                Some(u64::from(ex.http.port())),
                "Wharf's port is open to other pods"
            );
        }
    }
}

#[test]
fn the_grace_period_covers_the_prestop_step_and_wharfs_drain() {
    let ex = example();
    let pod = pod_spec(&ex.workload);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    let pre_stop = ex.wharf["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
    let server = &ex.toml["server"];
    let delay_s = server
        .get("drain_delay_ms")
        .and_then(toml::Value::as_integer)
        .map_or(0, |ms| u64::try_from(ms).unwrap_or(0).div_ceil(1000));
    // The app, told to stop at the same moment, needs a window in which
    // Wharf still takes its last writes: a preStop sleep, or drain_delay_ms.
    assert!(pre_stop + delay_s > 0, "no preStop sleep on wharf and no server.drain_delay_ms");
    let grpc_s = if server.get("grpc").is_some() { GRPC_DRAIN_S } else { 0 };
    let drain = pre_stop + delay_s + HTTP_DRAIN_S + grpc_s + DELIVERY_DRAIN_S;
    assert!(
        grace >= drain,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain_delay {delay_s} + drain {}",
        drain - pre_stop - delay_s
    );
}

#[test]
fn the_data_dir_is_a_writable_volume_and_the_pod_runs_as_the_images_user() {
    let ex = example();
    let pod = pod_spec(&ex.workload);
    let data_dir = ex.toml["server"]["data_dir"].as_str().expect("server.data_dir");
    let mount = ex.wharf["volumeMounts"]
        .as_array()
        .expect("wharf's volume mounts")
        .iter()
        .find(|m| {
            m["mountPath"].as_str().is_some_and(|p| data_dir == p || data_dir.starts_with(&format!("{p}/")))
        })
        .unwrap_or_else(|| panic!("data_dir {data_dir} is on no volume"));
    assert_ne!(mount["readOnly"], true, "the data dir's volume is read-only");
    let name = &mount["name"];
    let in_pod = pod["volumes"].as_array().into_iter().flatten().any(|v| &v["name"] == name);
    let claimed = ex.workload["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| &c["metadata"]["name"] == name);
    assert!(in_pod || claimed, "volume {name} is defined nowhere");

    // The image's user (Containerfile: USER 65532:65532) owns the volume.
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["fsGroup"].as_u64(), Some(65532), "the volume is not writable by the image's user");
    let requests = &ex.wharf["resources"]["requests"];
    assert!(
        requests["cpu"].is_string() && requests["memory"].is_string(),
        "wharf's resource requests: {requests}"
    );
}

#[test]
fn the_embedded_config_passes_check_config_with_the_shipped_plugins() {
    let ex = example();
    let targets: Vec<String> = ex
        .toml
        .get("namespaces")
        .and_then(toml::Value::as_table)
        .expect("namespaces")
        .values()
        .flat_map(|ns| {
            let one = ns.get("target").into_iter();
            let many = ns.get("targets").and_then(toml::Value::as_table).into_iter().flat_map(|t| t.values());
            one.chain(many).filter_map(|t| t.get("plugin").and_then(toml::Value::as_str).map(String::from))
        })
        .collect();
    assert!(!targets.is_empty(), "no target in the embedded config");
    for path in &targets {
        let name = path.strip_prefix(IMAGE_PLUGINS).and_then(|n| n.strip_suffix(".wasm"));
        assert!(name.is_some_and(|n| SHIPPED.contains(&n)), "{path} is not a plugin the image ships");
        plugin(name.unwrap_or_default());
    }
    // The image's paths, moved to the build's: plugins and the data dir.
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = plugin("http").parent().map(|p| format!("{}/", p.display())).expect("plugin dir");
    let data_dir = ex.toml["server"]["data_dir"].as_str().expect("server.data_dir");
    let text = ex
        .toml_text
        .replace(IMAGE_PLUGINS, &plugins)
        .replace(&format!("{data_dir:?}"), &format!("{:?}", dir.path().join("data")));
    let file = dir.path().join("wharf.toml");
    std::fs::write(&file, text).expect("write the config");
    let out = Command::new(wharf_bin())
        .args(["check-config", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wharf check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the ConfigMap {}'s config: {stdout}{}",
        ex.config_map["metadata"]["name"],
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("init ok"), "{stdout}");
}
