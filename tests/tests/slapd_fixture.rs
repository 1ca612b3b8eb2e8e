//! The throwaway slapd fixture itself: its data, its TLS listeners, SASL EXTERNAL with the client
//! certificate, a restart, and the options.

use std::path::Path;
use std::process::{Command, Output};

use e2e::slapd::{CLIENT_SUBJECT, LdapServer, Slapd, SlapdOptions};

/// An OpenLDAP tool with `ldap.conf` ignored except for the given `LDAPTLS_*` settings.
fn tool(program: &str, tls: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut command = Command::new(program);
    command.env_remove("LDAPNOINIT").env("LDAPCONF", "/dev/null").env("LDAPRC", "/dev/null");
    for (name, value) in tls {
        command.env(name, value);
    }
    command.args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn serves_tls_external_and_survives_a_restart() {
    let mut slapd = Slapd::start();
    let suffix = slapd.suffix().to_string();
    assert_eq!(suffix, "dc=example,dc=com");
    assert_eq!(slapd.admin_dn(), "cn=admin,dc=example,dc=com");

    let people = format!("ou=People,{suffix}");
    assert!(slapd.ldapsearch(&suffix, "(ou=People)", &["ou"]).contains(&format!("dn: {people}\nou: People")));
    assert_eq!(slapd.entry_count(&suffix, "(objectClass=organizationalUnit)"), 2);

    let ca = slapd.ca_file();
    let base = ["-x", "-LLL", "-b", &people, "-s", "base", "ou"];
    // LDAPS, by the name in the certificate.
    let ldaps =
        tool("ldapsearch", &[("LDAPTLS_CACERT", &ca)], &[&["-H", &slapd.ldaps_url()], &base[..]].concat());
    assert!(stdout(&ldaps).contains("ou: People"));
    // StartTLS, required (-ZZ), on the plain listener.
    let start_tls =
        tool("ldapsearch", &[("LDAPTLS_CACERT", &ca)], &[&["-ZZ", "-H", &slapd.url()], &base[..]].concat());
    assert!(stdout(&start_tls).contains("ou: People"));
    // Another CA's trust store does not verify the server.
    let system_ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let untrusted = tool(
        "ldapsearch",
        &[("LDAPTLS_CACERT", system_ca)],
        &[&["-H", &slapd.ldaps_url()], &base[..]].concat(),
    );
    assert!(!untrusted.status.success(), "LDAPS verified without our CA: {}", stdout(&untrusted));

    // SASL EXTERNAL with the client certificate binds as the admin.
    let (cert, key) = slapd.client_cert();
    let tls = [("LDAPTLS_CACERT", ca.as_path()), ("LDAPTLS_CERT", &cert), ("LDAPTLS_KEY", &key)];
    let whoami = stdout(&tool("ldapwhoami", &tls, &["-Y", "EXTERNAL", "-H", &slapd.ldaps_url()]));
    assert_eq!(whoami.trim(), format!("dn:{}", slapd.admin_dn()), "EXTERNAL as {CLIENT_SUBJECT}");

    // Sync (syncprov) answers with a cookie.
    let sync = tool(
        "ldapsearch",
        &[],
        &["-x", "-H", &slapd.url(), "-D", &slapd.admin_dn(), "-w", slapd.admin_password()]
            .into_iter()
            .chain(["-b", &suffix, "-E", "!sync=ro", "(ou=People)", "1.1"])
            .collect::<Vec<_>>(),
    );
    assert!(stdout(&sync).contains("# cookie: rid="), "no sync cookie");

    slapd.ldapmodify(&format!(
        "dn: uid=alice,{people}\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice\nsn: Liddell\n\
         userPassword: alice-pw\n\n\
         dn: {people}\nchangetype: modify\nreplace: description\ndescription: before restart\n"
    ));
    assert_eq!(slapd.entry_count(&people, "(uid=alice)"), 1);

    let url = slapd.url();
    slapd.stop();
    assert!(!slapd.running());
    let refused = tool("ldapsearch", &[], &["-x", "-H", &url, "-b", "", "-s", "base"]);
    assert!(!refused.status.success(), "a stopped slapd answered");

    slapd.restart();
    assert!(slapd.running());
    assert_eq!(slapd.url(), url);
    assert_eq!(slapd.entry_count(&people, "(uid=alice)"), 1);
    assert!(
        slapd.ldapsearch(&people, "(ou=People)", &["description"]).contains("description: before restart")
    );
    // The password is hidden from anonymous readers but lets alice bind.
    let anonymous = tool("ldapsearch", &[], &["-x", "-LLL", "-H", &url, "-b", &people, "(uid=alice)", "*"]);
    let anonymous = stdout(&anonymous);
    assert!(anonymous.contains("cn: Alice") && !anonymous.contains("userPassword"), "{anonymous}");
    let alice = format!("uid=alice,{people}");
    assert_eq!(
        stdout(&tool("ldapwhoami", &[], &["-x", "-H", &url, "-D", &alice, "-w", "alice-pw"])).trim(),
        format!("dn:{alice}")
    );
    let ldaps =
        tool("ldapsearch", &[("LDAPTLS_CACERT", &ca)], &[&["-H", &slapd.ldaps_url()], &base[..]].concat());
    assert!(stdout(&ldaps).contains("ou: People"), "LDAPS after the restart");
}

#[test]
fn options_suffix_size_limit_no_tls_no_syncprov() {
    let opts = SlapdOptions {
        suffix: "o=acme".into(),
        tls: false,
        syncprov: false,
        size_limit: Some(3),
        accesslog: false,
        durable: false,
    };
    let slapd = Slapd::start_with(opts);
    assert_eq!(slapd.admin_dn(), "cn=admin,o=acme");
    let ldif: String = (0..5)
        .map(|i| {
            format!(
                "dn: uid=u{i},ou=People,o=acme\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: U{i}\nsn: U\n\n"
            )
        })
        .collect();
    slapd.ldapmodify(&ldif);
    // The root DN has no size limit; anyone else has 3.
    assert_eq!(slapd.entry_count("o=acme", "(objectClass=inetOrgPerson)"), 5);
    let limited =
        tool("ldapsearch", &[], &["-x", "-H", &slapd.url(), "-b", "o=acme", "(objectClass=inetOrgPerson)"]);
    assert_eq!(limited.status.code(), Some(4), "expected sizeLimitExceeded: {limited:?}");
    // No syncprov: the sync control is unavailable.
    let admin = ["-x", "-H", &slapd.url(), "-D", "cn=admin,o=acme", "-w", slapd.admin_password()];
    let sync = tool("ldapsearch", &[], &[&admin[..], &["-b", "o=acme", "-E", "!sync=ro", "1.1"]].concat());
    assert!(!sync.status.success(), "sync without syncprov");
    // No TLS: StartTLS is refused.
    let start_tls = tool("ldapsearch", &[], &["-x", "-ZZ", "-H", &slapd.url(), "-b", "", "-s", "base"]);
    assert!(!start_tls.status.success(), "StartTLS without TLS");
}
