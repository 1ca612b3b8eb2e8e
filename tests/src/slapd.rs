//! A throwaway OpenLDAP `slapd` for end-to-end tests: its own `cn=config`, database, certificates
//! and log in a temporary directory, on two free loopback ports (`ldap://` with StartTLS, and
//! `ldaps://`).
//!
//! Needs the `slapd` and `ldap-utils` packages (Debian builds `back_mdb` and `syncprov` as modules
//! in `/usr/lib/ldap`, and ships the schemas in `/etc/ldap/schema`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{TempDir, free_addr, is_alive};

/// The subject of [`Slapd::client_cert`], as slapd writes it; `olcAuthzRegexp` maps it to the
/// root DN, so that a SASL EXTERNAL bind over TLS with that certificate binds as the admin.
pub const CLIENT_SUBJECT: &str = "cn=client,o=example";

const ADMIN_PASSWORD: &str = "admin-secret-pw";
const MODULE_PATH: &str = "/usr/lib/ldap";
const SCHEMA_DIR: &str = "/etc/ldap/schema";
/// How long a start may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stop waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to set up a [`Slapd`].
#[derive(Debug, Clone)]
pub struct SlapdOptions {
    /// The database suffix; its first RDN must be `dc=`, `o=` or `ou=`.
    pub suffix: String,
    /// Whether to configure TLS: StartTLS on the `ldap://` listener, and an `ldaps://` listener.
    pub tls: bool,
    /// Whether to put the syncprov overlay (RFC 4533 sync, with a session log) on the database.
    pub syncprov: bool,
    /// `olcSizeLimit`; `None` keeps slapd's default of 500 entries (the root DN has no limit).
    pub size_limit: Option<u32>,
    /// Whether to log successful writes with the accesslog overlay into `cn=accesslog`.
    pub accesslog: bool,
    /// Whether the database syncs its writes to disk (slapd's default); off for tests and for
    /// benchmarks that measure code rather than the disk.
    pub durable: bool,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        Self {
            suffix: "dc=example,dc=com".into(),
            tls: true,
            syncprov: true,
            size_limit: None,
            accesslog: false,
            durable: false,
        }
    }
}

/// A running throwaway slapd; stopped (and its directory removed) on drop.
pub struct Slapd {
    dir: TempDir,
    child: Option<Child>,
    ldap: SocketAddr,
    ldaps: Option<SocketAddr>,
    suffix: String,
    /// The suffix entry's `description`, unique to this fixture: the readiness probe checks it,
    /// so that another server on the same port cannot pass for this one.
    token: String,
}

impl Slapd {
    /// Starts a slapd with the default options; waits until it answers.
    pub fn start() -> Self {
        Self::start_with(SlapdOptions::default())
    }

    /// Starts a slapd with `opts`; waits until it answers. Panics with slapd's output on failure.
    pub fn start_with(opts: SlapdOptions) -> Self {
        let dir = TempDir::new("slapd");
        let token = format!(
            "e2e-slapd-{}-{}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
        );
        let admin_dn = format!("cn=admin,{}", opts.suffix);
        std::fs::create_dir_all(dir.path().join("slapd.d")).expect("create slapd.d");
        std::fs::create_dir_all(dir.path().join("db")).expect("create db dir");
        if opts.tls {
            write_certificates(dir.path());
        }
        // Offline, as slapd would run: `cn=config` into database 0, the base entries into 1.
        slapadd(dir.path(), "0", "config.ldif", &config_ldif(dir.path(), &opts, &admin_dn));
        slapadd(dir.path(), "1", "base.ldif", &base_ldif(&opts.suffix, &token));

        let ldaps = opts.tls.then(free_addr);
        let mut slapd = Self { dir, child: None, ldap: free_addr(), ldaps, suffix: opts.suffix, token };
        // A port found free may be taken before slapd binds it: then try other ports.
        for attempt in 1.. {
            match slapd.launch() {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    slapd.ldap = free_addr();
                    slapd.ldaps = opts.tls.then(free_addr);
                }
                Err(log) => panic!("slapd did not start; its output:\n{log}"),
            }
        }
        slapd
    }

    /// The server's process id, while it runs (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The LDAPS listener, by a name the server certificate holds: `ldaps://localhost:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps.expect("slapd was started without TLS").port())
    }

    /// The PEM file of the CA that signed the server and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_file("ca.pem")
    }

    /// A client certificate and its key (PEM files), subject [`CLIENT_SUBJECT`], signed by the
    /// same CA; a SASL EXTERNAL bind with it binds as [`Slapd::admin_dn`].
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (self.tls_file("client.pem"), self.tls_file("client.key"))
    }

    /// The server's output (`-d none`: start, stop and critical messages) since it last started.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server process is running.
    pub fn running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| is_alive(c.id()))
    }

    /// Stops the server (SIGTERM, SIGKILL after 5 s) and waits for it; keeps its data. Does
    /// nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    fn tls_file(&self, name: &str) -> PathBuf {
        assert!(self.ldaps.is_some(), "slapd was started without TLS");
        self.dir.path().join("tls").join(name)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// Spawns slapd and waits until it answers; on failure, stops it and returns its output.
    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).expect("create slapd.log");
        let listeners = match self.ldaps {
            Some(ldaps) => format!("ldap://{}/ ldaps://{ldaps}/", self.ldap),
            None => format!("ldap://{}/", self.ldap),
        };
        let child = Command::new(sbin("slapd"))
            .arg("-F")
            .arg(self.dir.path().join("slapd.d"))
            .args(["-h", &listeners, "-d", "none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn slapd (is the slapd package installed?): {e}"));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.answers() {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().expect("wait for slapd"));
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("slapd exited ({status}):\n{}", self.log()));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("slapd did not answer within {READY_TIMEOUT:?}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether this very server answers: the suffix entry carries this run's token, and the
    /// LDAPS port accepts connections.
    fn answers(&self) -> bool {
        let probe = Command::new("ldapsearch")
            .env("LDAPNOINIT", "1")
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.url(), "-b", &self.suffix, "-s", "base"])
            .arg("description")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let ours = probe.is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(&format!("description: {}", self.token))
        });
        ours && self.ldaps.is_none_or(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
    }
}

impl LdapServer for Slapd {
    /// The plain listener (StartTLS-capable when TLS is on): `ldap://127.0.0.1:PORT`.
    fn url(&self) -> String {
        format!("ldap://{}", self.ldap)
    }

    /// The root DN, `cn=admin,<suffix>` (it has no entry).
    fn admin_dn(&self) -> String {
        format!("cn=admin,{}", self.suffix)
    }

    fn admin_password(&self) -> &str {
        ADMIN_PASSWORD
    }

    fn suffix(&self) -> &str {
        &self.suffix
    }

    fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("slapd did not restart; its output:\n{log}");
        }
    }
}

/// A shared reference reads as the server (restarting needs the server itself).
impl<T: LdapServer + ?Sized> LdapServer for &T {
    fn url(&self) -> String {
        (**self).url()
    }

    fn admin_dn(&self) -> String {
        (**self).admin_dn()
    }

    fn admin_password(&self) -> &str {
        (**self).admin_password()
    }

    fn suffix(&self) -> &str {
        (**self).suffix()
    }

    fn restart(&mut self) {
        panic!("restart the server itself, not a shared reference to it");
    }
}

/// A directory server under test, and the OpenLDAP client tools bound to it as its admin.
pub trait LdapServer {
    /// A URL of its plain listener, `ldap://127.0.0.1:PORT`.
    fn url(&self) -> String;
    /// The administrator's DN (the root DN).
    fn admin_dn(&self) -> String;
    /// The administrator's password.
    fn admin_password(&self) -> &str;
    /// The database suffix (the partition).
    fn suffix(&self) -> &str;
    /// Stops the server and starts it again on the same port and data; waits until it answers.
    fn restart(&mut self);

    /// `ldapsearch` as the admin over the plain listener (`-LLL`, no line wrapping); returns its
    /// LDIF output. Panics with stderr on failure (including "no such object").
    fn ldapsearch(&self, base: &str, filter: &str, attrs: &[&str]) -> String {
        let mut command = self.ldap_tool("ldapsearch");
        command.args(["-LLL", "-o", "ldif-wrap=no", "-b", base, filter]).args(attrs);
        String::from_utf8_lossy(&run_checked(&mut command).stdout).into_owned()
    }

    /// `ldapmodify -a` as the admin with `ldif` on stdin: records without a `changetype` are adds.
    /// Panics with the tool's output on failure.
    fn ldapmodify(&self, ldif: &str) {
        let mut child = self
            .ldap_tool("ldapmodify")
            .arg("-a")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ldapmodify");
        // Written from another thread: ldapmodify reports each entry on stdout while it reads,
        // and a large LDIF would fill both pipes.
        let mut stdin = child.stdin.take().expect("stdin");
        let ldif = ldif.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(ldif.as_bytes()));
        let output = child.wait_with_output().expect("wait for ldapmodify");
        writer.join().expect("LDIF writer").expect("write LDIF to ldapmodify");
        check(&output, "ldapmodify");
    }

    /// The number of entries under `base` (the base included) that match `filter`.
    fn entry_count(&self, base: &str, filter: &str) -> usize {
        self.ldapsearch(base, filter, &["1.1"]).lines().filter(|l| l.starts_with("dn:")).count()
    }

    /// An OpenLDAP client tool bound as the admin to the plain listener, ignoring `ldap.conf`
    /// and `LDAP*` variables.
    fn ldap_tool(&self, name: &str) -> Command {
        let mut command = Command::new(name);
        command.env("LDAPNOINIT", "1").args(["-x", "-H", &self.url(), "-D", &self.admin_dn()]);
        command.args(["-w", self.admin_password()]);
        command
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM, then waits; SIGKILL after [`STOP_TIMEOUT`].
pub(crate) fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A system binary by its absolute path when present (`/usr/sbin` is not always on `PATH`).
pub(crate) fn sbin(name: &str) -> PathBuf {
    let path = Path::new("/usr/sbin").join(name);
    if path.is_file() { path } else { PathBuf::from(name) }
}

/// Writes `ldif` to `dir/<file>` and loads it with `slapadd -n <database> -F dir/slapd.d`.
fn slapadd(dir: &Path, database: &str, file: &str, ldif: &str) {
    let path = dir.join(file);
    std::fs::write(&path, ldif).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    run_checked(
        Command::new(sbin("slapadd"))
            .args(["-n", database, "-F"])
            .arg(dir.join("slapd.d"))
            .arg("-l")
            .arg(&path),
    );
}

/// Runs a command to completion; panics with its output unless it succeeds.
pub(crate) fn run_checked(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} (are slapd and ldap-utils installed?): {e}"));
    check(&output, &program);
    output
}

fn check(output: &Output, program: &str) {
    assert!(
        output.status.success(),
        "{program} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The `cn=config` LDIF, for `slapadd -n0`.
fn config_ldif(dir: &Path, opts: &SlapdOptions, admin_dn: &str) -> String {
    let dir = dir.display();
    let mut global = format!(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\
         olcPidFile: {dir}/slapd.pid\nolcArgsFile: {dir}/slapd.args\n"
    );
    if let Some(limit) = opts.size_limit {
        global.push_str(&format!("olcSizeLimit: {limit}\n"));
    }
    if opts.tls {
        global.push_str(&format!(
            "olcTLSCACertificateFile: {dir}/tls/ca.pem\n\
             olcTLSCertificateFile: {dir}/tls/server.pem\n\
             olcTLSCertificateKeyFile: {dir}/tls/server.key\n\
             olcTLSVerifyClient: try\n\
             olcAuthzRegexp: \"^{CLIENT_SUBJECT}$\" \"{admin_dn}\"\n"
        ));
    }
    let mut syncprov_module = if opts.syncprov { "olcModuleLoad: syncprov\n" } else { "" }.to_string();
    if opts.accesslog {
        syncprov_module.push_str("olcModuleLoad: accesslog\n");
    }
    let accesslog = if opts.accesslog {
        std::fs::create_dir_all(format!("{dir}/accesslog")).expect("create the accesslog directory");
        format!(
            "\ndn: olcDatabase={{2}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n\
             olcDatabase: {{2}}mdb\nolcSuffix: cn=accesslog\nolcRootDN: {admin_dn}\n\
             olcDbDirectory: {dir}/accesslog\nolcDbMaxSize: 1073741824\nolcDbNoSync: TRUE\n\
             olcDbIndex: reqStart eq\nolcAccess: to * by dn.exact=\"{admin_dn}\" read by * none\n\n\
             dn: olcOverlay={{{overlay}}}accesslog,olcDatabase={{1}}mdb,cn=config\n\
             objectClass: olcOverlayConfig\nobjectClass: olcAccessLogConfig\nolcOverlay: {{{overlay}}}accesslog\n\
             olcAccessLogDB: cn=accesslog\nolcAccessLogOps: writes\nolcAccessLogSuccess: TRUE\n",
            overlay = usize::from(opts.syncprov),
        )
    } else {
        String::new()
    };
    let schemas: String = ["core", "cosine", "inetorgperson", "nis"]
        .iter()
        .map(|s| format!("include: file://{SCHEMA_DIR}/{s}.ldif\n\n"))
        .collect();
    let indexes: String = ["objectClass", "entryUUID", "entryCSN", "uid", "cn", "member", "uniqueMember"]
        .iter()
        .map(|a| format!("olcDbIndex: {a} eq\n"))
        .collect();
    let syncprov = if opts.syncprov {
        "dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config\n\
         objectClass: olcOverlayConfig\nobjectClass: olcSyncProvConfig\nolcOverlay: {0}syncprov\n\
         olcSpCheckpoint: 100 10\nolcSpSessionlog: 10000\n"
    } else {
        ""
    };
    format!(
        "{global}\n\
         dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
         olcModulePath: {MODULE_PATH}\nolcModuleLoad: back_mdb\n{syncprov_module}\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
         {schemas}\
         dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\n\n\
         dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {{0}}config\n\n\
         dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n\
         olcDatabase: {{1}}mdb\nolcSuffix: {suffix}\nolcRootDN: {admin_dn}\nolcRootPW: {ADMIN_PASSWORD}\n\
         olcDbDirectory: {dir}/db\nolcDbMaxSize: 4294967296\nolcDbNoSync: {no_sync}\n{indexes}\
         olcAccess: to attrs=userPassword by self write by anonymous auth by * none\n\
         olcAccess: to * by * read\n\n\
         {syncprov}{accesslog}",
        suffix = opts.suffix,
        no_sync = if opts.durable { "FALSE" } else { "TRUE" },
    )
}

/// The suffix entry (with `description: <token>`), `ou=People` and `ou=Groups`, for `slapadd -n1`.
fn base_ldif(suffix: &str, token: &str) -> String {
    let (rdn, _) = suffix.split_once(',').unwrap_or((suffix, ""));
    let (attr, value) = rdn.split_once('=').unwrap_or_else(|| panic!("bad suffix {suffix:?}"));
    let classes = match attr.trim().to_ascii_lowercase().as_str() {
        "dc" => format!("objectClass: dcObject\nobjectClass: organization\ndc: {value}\no: {value}\n"),
        "o" => format!("objectClass: organization\no: {value}\n"),
        "ou" => format!("objectClass: organizationalUnit\nou: {value}\n"),
        _ => panic!("unsupported suffix {suffix:?}: its first RDN must be dc=, o= or ou="),
    };
    format!(
        "dn: {suffix}\n{classes}description: {token}\n\n\
         dn: ou=People,{suffix}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Groups,{suffix}\nobjectClass: organizationalUnit\nou: Groups\n"
    )
}

/// Writes `tls/{ca,server,client}.pem` and the server and client keys: a CA, a server
/// certificate for `localhost`, `127.0.0.1` and this host's names, and a client certificate
/// with subject [`CLIENT_SUBJECT`].
pub fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };

    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("create tls dir");
    let write = |name: &str, pem: String| std::fs::write(tls.join(name), pem).expect("write PEM");

    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "e2e slapd test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA certificate");
    write("ca.pem", ca.pem());

    // libldap checks a certificate for `localhost` against this host's name instead (its
    // `ldap_int_hostname`), so the OpenLDAP tools need that name in the certificate too.
    let mut names = vec!["localhost".to_string()];
    names.extend(std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()));
    names.extend(
        Command::new("hostname")
            .arg("-f")
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
    );
    names.sort();
    names.dedup();
    let mut server = CertificateParams::default();
    server.distinguished_name = DistinguishedName::new();
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.subject_alt_names = names
        .into_iter()
        .filter(|n| !n.is_empty())
        .filter_map(|n| n.try_into().ok().map(SanType::DnsName))
        .chain([SanType::IpAddress([127, 0, 0, 1].into())])
        .collect();
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("server key");
    write("server.pem", server.signed_by(&key, &*ca).expect("server certificate").pem());
    write("server.key", key.serialize_pem());

    // Subject O=example, CN=client: slapd writes it as `cn=client,o=example`. (rcgen keeps one
    // value per attribute type, so `dc=example,dc=com` is not to be had.)
    let mut client = CertificateParams::default();
    client.distinguished_name = DistinguishedName::new();
    client.distinguished_name.push(DnType::OrganizationName, "example");
    client.distinguished_name.push(DnType::CommonName, "client");
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("client key");
    write("client.pem", client.signed_by(&key, &*ca).expect("client certificate").pem());
    write("client.key", key.serialize_pem());
}
