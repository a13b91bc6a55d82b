//! Network namespaces the tests make: a namespace joined to this one by a
//! veth pair, and the commands run as root to make and remove them. Needs
//! root (CI runs as root; scripts/setup installs iproute2 and nftables).

use std::process::Command;

/// Runs a command as root (directly, or through `sudo -n`), panicking with
/// its output when it fails.
pub fn root(args: &[&str]) {
    // SAFETY: geteuid(2) has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if is_root {
        Command::new(args[0])
    } else {
        Command::new("sudo")
    };
    if !is_root {
        cmd.arg("-n").arg(args[0]);
    }
    let out = cmd
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace, its veth pair (`veth` on this side, `peer` inside), and an
/// nftables table; all removed when dropped.
pub struct Netns {
    pub ns: String,
    pub veth: String,
    pub peer: String,
    pub table: String,
}

impl Netns {
    /// A new namespace with a veth pair, both ends down and bare; names
    /// unique to this process and `tag`.
    pub fn new(tag: &str) -> Netns {
        let id = std::process::id() % 100_000;
        let net = Netns {
            ns: format!("ffw{tag}{id}"),
            veth: format!("ffw{tag}{id}a"),
            peer: format!("ffw{tag}{id}b"),
            table: format!("ffw{tag}{id}"),
        };
        root(&["ip", "netns", "add", &net.ns]);
        root(&[
            "ip", "link", "add", &net.veth, "type", "veth", "peer", "name", &net.peer,
        ]);
        root(&["ip", "link", "set", &net.peer, "netns", &net.ns]);
        net
    }

    /// Joins this side (`host/24`) and the namespace (`inside/24`), links
    /// up, loopback too.
    pub fn link(&self, host: &str, inside: &str) {
        root(&[
            "ip",
            "addr",
            "add",
            &format!("{host}/24"),
            "dev",
            &self.veth,
        ]);
        root(&["ip", "link", "set", &self.veth, "up"]);
        self.run(&[
            "ip",
            "addr",
            "add",
            &format!("{inside}/24"),
            "dev",
            &self.peer,
        ]);
        self.run(&["ip", "link", "set", &self.peer, "up"]);
        self.run(&["ip", "link", "set", "lo", "up"]);
    }

    /// Runs `args` inside, as root, panicking when it fails.
    pub fn run(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        root(&all);
    }

    /// A command that runs `program` inside.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        // Only some tests make the table.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
