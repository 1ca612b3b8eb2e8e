//! A throwaway 389 Directory Server for end-to-end tests, in a temporary directory of its own.
//!
//! 389 DS is installed with `dscreate`, which lays an instance out under `/etc/dirsrv`, `/var`
//! and `/run` and starts it with systemd. Both are steered away here without patching anything:
//! lib389 reads its paths from `$PREFIX/share/dirsrv/inf/defaults.inf` when `PREFIX` is set, so a
//! copy of the packaged file with every writable path under the temporary directory and
//! `with_systemd = 0` makes `dscreate` install there and start `ns-slapd` itself. The instance
//! runs as root (`user = root`: the temporary tree is root's). Then, with the server stopped,
//! `dse.ldif` is edited to enable the Retro Changelog plug-in (copying each changed entry's
//! `nsUniqueId` and `entryUUID` into its changelog record) and, when asked, the Content
//! Synchronization plug-in (RFC 4533), and `ns-slapd` runs in the foreground as our child.
//! Like the OpenLDAP fixture, the suffix holds `ou=People` and `ou=Groups`.
//!
//! Needs the `389-ds-base` package (with `python3-lib389`, which gives `dscreate`).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::slapd::{LdapServer, run_checked, sbin, terminate};
use crate::{TempDir, free_addr};

const ADMIN_DN: &str = "cn=Directory Manager";
const ADMIN_PASSWORD: &str = "Directory-Manager-pw1";
const INSTANCE: &str = "e2e";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to set up a [`DirSrv`].
#[derive(Debug, Clone)]
pub struct DirSrvOptions {
    pub suffix: String,
    /// Whether to enable the Content Synchronization plug-in (the RFC 4533 sync control). The
    /// retro changelog is always on.
    pub content_sync: bool,
    /// Whether `dscreate` makes its self-signed CA and a server certificate for `localhost`:
    /// StartTLS on the plain port and an `ldaps://` port (about 4 s more to install).
    pub tls: bool,
}

impl Default for DirSrvOptions {
    fn default() -> Self {
        Self { suffix: "dc=example,dc=com".into(), content_sync: false, tls: false }
    }
}

/// A running throwaway 389 DS; stopped (and its directory removed) on drop.
pub struct DirSrv {
    dir: TempDir,
    child: Option<Child>,
    ldap: SocketAddr,
    ldaps: SocketAddr,
    suffix: String,
}

/// Whether 389 DS can be installed here (`dscreate` and `ns-slapd` exist).
pub fn installed() -> bool {
    sbin("dscreate").is_file() && sbin("ns-slapd").is_file()
}

impl DirSrv {
    pub fn start() -> Self {
        Self::start_with(DirSrvOptions::default())
    }

    /// Installs an instance with `dscreate` and starts it; panics with the tools' output on failure.
    pub fn start_with(opts: DirSrvOptions) -> Self {
        let dir = TempDir::new("dirsrv");
        let prefix = dir.path();
        write_defaults(prefix);
        let (ldap, ldaps) = (free_addr(), free_addr());
        let inf = prefix.join("instance.inf");
        std::fs::write(
            &inf,
            format!(
                "[general]\nfull_machine_name = localhost\nstart = False\nstrict_host_checking = False\n\
                 selinux = False\nsystemd = False\n\
                 [slapd]\ninstance_name = {INSTANCE}\nuser = root\ngroup = root\nport = {}\nsecure_port = {}\n\
                 self_sign_cert = {}\nroot_dn = {ADMIN_DN}\nroot_password = {ADMIN_PASSWORD}\n\
                 [backend-userroot]\nsample_entries = no\nsuffix = {}\ncreate_suffix_entry = True\n",
                ldap.port(),
                ldaps.port(),
                if opts.tls { "True" } else { "False" },
                opts.suffix
            ),
        )
        .expect("write instance.inf");
        {
            // One installation at a time: each runs a server for a moment and takes a few
            // seconds of CPU.
            static INSTALL: Mutex<()> = Mutex::new(());
            let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
            run_checked(Command::new(sbin("dscreate")).env("PREFIX", prefix).arg("from-file").arg(&inf));
        }
        enable_plugins(&config_dir(prefix).join("dse.ldif"), opts.content_sync);
        let mut server = Self { dir, child: None, ldap, ldaps, suffix: opts.suffix };
        server.launch();
        // The same two containers as the OpenLDAP fixture's.
        let base = server.suffix.clone();
        server.ldapmodify(&format!(
            "dn: ou=People,{base}\nobjectClass: organizationalUnit\nou: People\n\n\
             dn: ou=Groups,{base}\nobjectClass: organizationalUnit\nou: Groups\n"
        ));
        server
    }

    /// The plain port by the name its certificate holds (for StartTLS): `ldap://localhost:PORT`.
    pub fn tls_url(&self) -> String {
        format!("ldap://localhost:{}", self.ldap.port())
    }

    /// The LDAPS port (started with `tls`): `ldaps://localhost:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps.port())
    }

    /// The PEM file of the CA `dscreate` made (started with `tls`).
    pub fn ca_file(&self) -> PathBuf {
        config_dir(self.dir.path()).join("ca.crt")
    }

    /// The server's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("var/log/dirsrv/slapd-{INSTANCE}/errors")))
            .unwrap_or_default()
    }

    /// Stops the server (SIGTERM, SIGKILL after 5 s) and waits for it; keeps its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    fn launch(&mut self) {
        let prefix = self.dir.path();
        let output = std::fs::File::create(prefix.join("ns-slapd.out")).expect("create ns-slapd.out");
        // `-d 0`: in the foreground (our child), with no debug output.
        let child = Command::new(sbin("ns-slapd"))
            .arg("-D")
            .arg(config_dir(prefix))
            .arg("-i")
            .arg(prefix.join(format!("run/dirsrv/slapd-{INSTANCE}.pid")))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone output"))
            .stderr(output)
            .process_group(0)
            .spawn()
            .expect("spawn ns-slapd");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let probe = self
                .ldap_tool("ldapsearch")
                .args(["-LLL", "-b", &self.suffix, "-s", "base", "1.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if probe.is_ok_and(|s| s.success()) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait for ns-slapd")) {
                self.child = None;
                panic!("ns-slapd exited ({status}); its error log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("ns-slapd did not answer within {READY_TIMEOUT:?}; its error log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl LdapServer for DirSrv {
    fn url(&self) -> String {
        format!("ldap://{}", self.ldap)
    }

    fn admin_dn(&self) -> String {
        ADMIN_DN.to_string()
    }

    fn admin_password(&self) -> &str {
        ADMIN_PASSWORD
    }

    fn suffix(&self) -> &str {
        &self.suffix
    }

    fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for DirSrv {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_dir(prefix: &Path) -> PathBuf {
    prefix.join(format!("etc/dirsrv/slapd-{INSTANCE}"))
}

/// `$PREFIX/share/dirsrv/inf/defaults.inf`: the packaged one with its writable paths moved under
/// `prefix` and systemd off; and the system-wide configuration `dscreate` copies from
/// `<sysconf_dir>/dirsrv`.
fn write_defaults(prefix: &Path) {
    let packaged = std::fs::read_to_string("/usr/share/dirsrv/inf/defaults.inf")
        .expect("read /usr/share/dirsrv/inf/defaults.inf (is 389-ds-base installed?)");
    let p = prefix.display();
    // Keys whose value is a path to move under the prefix (programs, plug-ins, schema and
    // templates stay where the package put them).
    const MOVED: &[&str] = &[
        "sysconf_dir",
        "initconfig_dir",
        "config_dir",
        "local_state_dir",
        "run_dir",
        "ldapi",
        "pid_file",
        "tmpfiles_d",
        "schema_dir",
        "cert_dir",
        "lock_dir",
        "log_dir",
        "access_log",
        "audit_log",
        "error_log",
        "security_log",
        "db_dir",
        "db_home_dir",
        "backup_dir",
        "ldif_dir",
        "tmp_dir",
    ];
    let mut defaults = String::new();
    for line in packaged.lines() {
        let moved = line.split_once(" = ").filter(|(key, _)| MOVED.contains(key));
        match moved {
            Some((key, value)) => defaults.push_str(&format!("{key} = {p}{value}\n")),
            None if line.starts_with("with_systemd = ") => defaults.push_str("with_systemd = 0\n"),
            None => defaults.push_str(&format!("{line}\n")),
        }
    }
    let inf = prefix.join("share/dirsrv/inf");
    std::fs::create_dir_all(&inf).expect("create share/dirsrv/inf");
    std::fs::write(inf.join("defaults.inf"), defaults).expect("write defaults.inf");
    for sub in ["config", "schema"] {
        let target = prefix.join("etc/dirsrv").join(sub);
        std::fs::create_dir_all(&target).expect("create etc/dirsrv");
        let source = Path::new("/etc/dirsrv").join(sub);
        for file in std::fs::read_dir(&source).into_iter().flatten().flatten() {
            std::fs::copy(file.path(), target.join(file.file_name())).expect("copy /etc/dirsrv");
        }
    }
    for sub in ["run/lock", "var/log", "var/lib", "tmp", "dev/shm"] {
        std::fs::create_dir_all(prefix.join(sub)).expect("create instance directories");
    }
}

/// Turns on the Retro Changelog plug-in (copying `nsUniqueId` and `entryUUID` into each record)
/// and, when asked, Content Synchronization, in a stopped server's `dse.ldif`.
fn enable_plugins(dse: &Path, content_sync: bool) {
    let text = std::fs::read_to_string(dse).expect("read dse.ldif");
    let entries: Vec<String> = text
        .split("\n\n")
        .map(|entry| {
            let dn = entry.trim_start().lines().next().unwrap_or("").to_ascii_lowercase();
            let retro = dn == "dn: cn=retro changelog plugin,cn=plugins,cn=config";
            let sync = dn == "dn: cn=content synchronization,cn=plugins,cn=config";
            if !(retro || sync && content_sync) {
                return entry.to_string();
            }
            let mut entry = entry.replace("nsslapd-pluginEnabled: off", "nsslapd-pluginEnabled: on");
            if retro {
                entry = format!(
                    "{}\nnsslapd-attribute: nsuniqueid:targetUniqueId\nnsslapd-attribute: entryuuid:targetEntryUUID",
                    entry.trim_end()
                );
            }
            entry
        })
        .collect();
    std::fs::write(dse, entries.join("\n\n")).expect("write dse.ldif");
}
