//! The deployment recipes in deploy/: the Dockerfile is lint-clean, copies
//! only what the repository has, and the command it runs serves the built-in
//! stream; each Kubernetes overlay renders, and the ffwhep it describes (its
//! arguments, its profile from the ConfigMap, its probes) runs here on
//! loopback and serves a viewer; the systemd units verify.

mod common;

use common::Ffwhep;
use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a tool that scripts/setup installs.
fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} ({e}): scripts/setup installs it"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_dockerfile_is_lint_clean() {
    let o = tool("hadolint", &["deploy/Dockerfile"]);
    assert!(o.status.success(), "hadolint: {}", text(&o));
}

#[test]
fn the_dockerfile_copies_only_what_the_repository_has() {
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let mut sources = 0;
    for line in dockerfile.lines() {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: not in the repository");
            sources += 1;
        }
    }
    assert!(sources >= 4, "{sources} sources copied");
}

/// A JSON-array instruction's words (`ENTRYPOINT ["a", "b"]`).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{instruction} {line}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_command_serves_the_built_in_stream() {
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let entry = exec_form(&dockerfile, "ENTRYPOINT");
    let cmd = exec_form(&dockerfile, "CMD");
    assert_eq!(entry[0], "/usr/local/bin/ffwhep");
    // `ffwhep --log-format json run` + CMD, on loopback here.
    let run = entry.iter().position(|w| w == "run").expect("ffwhep run");
    let mut args: Vec<String> = entry[1..run].to_vec();
    args.extend(entry[run + 1..].iter().cloned());
    args.extend(cmd.iter().map(|w| loopback(w)));
    args.extend(["--ice-addr".into(), "127.0.0.1:0".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ff = Ffwhep::start_raw(&args);
    assert!(ff.url.ends_with("/whep/testsrc"), "{}", ff.url);
    let v = common::connect(&ff.url).await;
    common::wait_for(&v, Duration::from_secs(60), "the test pattern", |r| {
        r.frames_since_idr > 30
    })
    .await;
    v.close().await;
}

/// An address to bind in the pod, as one to bind here.
fn loopback(word: &str) -> String {
    match word {
        "0.0.0.0:8080" => "127.0.0.1:0".into(),
        "0.0.0.0:0" => "127.0.0.1:0".into(),
        w => w.into(),
    }
}

/// The objects `kubectl kustomize` renders for an overlay.
fn render(overlay: &str) -> Vec<Value> {
    let o = tool("kubectl", &["kustomize", &format!("deploy/k8s/{overlay}")]);
    assert!(o.status.success(), "kustomize {overlay}: {}", text(&o));
    let yaml = String::from_utf8(o.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A free UDP port on loopback.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> reqwest::StatusCode {
    reqwest::get(url).await.expect("GET").status()
}

/// Renders an overlay, checks the Deployment against itself (probes on the
/// port ffwhep listens on, the profile where the args name it), then runs
/// its container's command here: the pod's addresses become loopback, the
/// ConfigMap's profile a file.
async fn run_overlay(overlay: &str) {
    let objects = render(overlay);
    let deployment = of_kind(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1, "one process per stream");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    let listen = &args[args.iter().position(|a| a == "--listen").unwrap() + 1];
    let http = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("an http port");
    assert_eq!(
        listen.rsplit(':').next().unwrap(),
        http["containerPort"].as_u64().unwrap().to_string(),
        "the probes' port is the one ffwhep listens on"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let profile_path = args.last().unwrap();
    assert_eq!(Path::new(profile_path).parent().unwrap(), Path::new(mount));
    let config_map = of_kind(&objects, "ConfigMap");
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"], config_map["metadata"]["name"],
        "the profile volume is the generated ConfigMap"
    );
    let file = Path::new(profile_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let profile = config_map["data"][file].as_str().expect("the profile");
    let profile = common::temp_file(file, profile);

    let mux_port = free_udp_port();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            let a = a
                .replace("$(POD_IP)", "127.0.0.1")
                .replace("$(HOST_IP)", "127.0.0.1");
            if a == *profile_path {
                profile.display().to_string()
            } else if a == "127.0.0.1:8189" {
                format!("127.0.0.1:{mux_port}")
            } else {
                loopback(&a)
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ff = Ffwhep::start_raw(&args);
    assert_eq!(get(&format!("{}/healthz", ff.base())).await, 200);
    let v = common::connect(&ff.url).await;
    common::wait_for(&v, Duration::from_secs(60), "media", |r| {
        r.frames_since_idr > 30 && r.audio.packets > 20
    })
    .await;
    // Media flows: the stream is ready.
    assert_eq!(get(&format!("{}/readyz", ff.base())).await, 200);
    let candidates: Vec<&str> = v
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    if overlay == "udp-mux" {
        // Every candidate is the node's address and the published port.
        assert!(
            candidates
                .iter()
                .all(|l| l.contains(&format!(" 127.0.0.1 {mux_port} "))),
            "{candidates:?}"
        );
    }
    assert!(!candidates.is_empty());
    v.close().await;
}

/// With the pod's address and the node's apart (as in a cluster), the
/// answer's candidates carry the node's: `--nat-ip $(HOST_IP)` is applied.
/// (Media cannot flow here: nothing translates 127.0.0.2 to the pod.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_mux_overlay_advertises_the_nodes_address() {
    let objects = render("udp-mux");
    let c = &of_kind(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let mux_port = free_udp_port();
    let profile = common::testsrc_profile("cam1", "");
    let args: Vec<String> = strings(&c["args"])
        .iter()
        .map(|a| match a.as_str() {
            "$(POD_IP):8189" => format!("127.0.0.1:{mux_port}"),
            "$(HOST_IP)" => "127.0.0.2".into(),
            "/etc/ffwhep/stream.yaml" => profile.display().to_string(),
            a => loopback(a),
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ff = Ffwhep::start_raw(&args);
    let (resp, offer) = common::post_offer(&ff.url, None).await;
    assert_eq!(resp.status(), 201);
    let answer = resp.text().await.unwrap();
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(
        !candidates.is_empty()
            && candidates
                .iter()
                .all(|l| l.contains(&format!(" 127.0.0.2 {mux_port} "))),
        "{candidates:?}"
    );
    offer.pc.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_mux_overlay_runs_here() {
    run_overlay("udp-mux").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_network_overlay_runs_here() {
    let objects = render("host-network");
    let pod = &of_kind(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    run_overlay("host-network").await;
}

/// `systemd-analyze verify` of a unit, with ExecStart pointed at the binary
/// under test.
fn verify_unit(name: &str) -> String {
    let unit = std::fs::read_to_string(repo(&format!("deploy/systemd/{name}"))).unwrap();
    let unit = unit.replace("/usr/local/bin/ffwhep", env!("CARGO_BIN_EXE_ffwhep"));
    let path = common::temp_file(name, &unit);
    let o = tool(
        "systemd-analyze",
        &["verify", "--man=no", path.to_str().unwrap()],
    );
    assert!(o.status.success(), "{name}: {}", text(&o));
    assert_eq!(text(&o).trim(), "", "{name}: warnings");
    unit
}

#[test]
fn the_systemd_units_verify() {
    verify_unit("ffwhep.service");
    let template = verify_unit("ffwhep@.service");
    // One profile and one environment file per instance.
    assert!(template.contains("/etc/ffwhep/%i.yaml"));
    assert!(template.contains("EnvironmentFile=-/etc/ffwhep/%i.env"));
}

#[test]
fn the_template_units_command_runs_with_its_defaults() {
    // ExecStart with an empty $FFWHEP_ARGS, %i = testsrc, and the listen
    // address the instance's environment file would set.
    let unit = std::fs::read_to_string(repo("deploy/systemd/ffwhep@.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let profile = repo("profiles/testsrc.yaml");
    let words: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .filter(|w| *w != "$FFWHEP_ARGS")
        .map(|w| w.replace("/etc/ffwhep/%i.yaml", profile.to_str().unwrap()))
        .collect();
    let o = common::bin()
        .args(["check"])
        .arg(words.last().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let run = words.iter().position(|w| w == "run").unwrap();
    let out = common::bin()
        .args(&words[..run])
        .arg("run")
        .args(["--ice-addr", "127.0.0.1:0", "--duration", "1s"])
        .args(&words[run + 1..])
        .env("FFWHEP_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", out.status, text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("WHEP http://127.0.0.1:"), "{stdout}");
}
