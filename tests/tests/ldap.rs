//! connector-ldap against a real OpenLDAP slapd (started by the test), driven through the
//! supervisor's SCIM front with `deploy/examples/ldap.toml`; the directory is inspected with
//! `ldapsearch`.

use std::time::Duration;

use e2e::dirsrv::{DirSrv, DirSrvOptions};
use e2e::slapd::{LdapServer, Slapd};
use e2e::{Supervisor, TempDir, request, workspace};
use serde_json::{Value, json};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

fn example() -> String {
    std::fs::read_to_string(workspace().join("deploy/examples/ldap.toml")).expect("read ldap.toml")
}

/// A supervisor on the shipped example, pointed at `slapd` over StartTLS with its CA.
fn start(slapd: &Slapd, dir: &TempDir, config: &str) -> Supervisor {
    let ca = slapd.ca_file().display().to_string();
    start_on(slapd, dir, config, &[("LDAP_CA_FILE", &ca)])
}

/// A supervisor on `config` with the example's variables pointing at `server`, plus `more`.
fn start_on(server: &impl LdapServer, dir: &TempDir, config: &str, more: &[(&str, &str)]) -> Supervisor {
    let url = server.url();
    let admin = server.admin_dn();
    let mut env = vec![
        ("LDAP_URL", url.as_str()),
        ("LDAP_BIND_DN", admin.as_str()),
        ("LDAP_BIND_PASSWORD", server.admin_password()),
        ("LDAP_BASE_DN", server.suffix()),
    ];
    env.extend_from_slice(more);
    let s = Supervisor::spawn_with_env(config, dir.path(), &env);
    s.wait_ready(Duration::from_secs(30));
    s
}

fn post(s: &Supervisor, endpoint: &str, body: &Value) -> Value {
    let r = s.scim("POST", &format!("/scim/directory/{endpoint}"), Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn patch(s: &Supervisor, path: &str, ops: Value) -> e2e::Response {
    let body = json!({"schemas": [PATCH], "Operations": ops});
    s.scim("PATCH", &format!("/scim/directory/{path}"), Some(&body.to_string()))
}

fn user(name: &str, display: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "displayName": display,
           "name": {"givenName": "Given", "familyName": format!("Family {name}")},
           "emails": [{"type": "work", "value": format!("{name}@example.com"), "primary": true}]})
}

/// `attribute: value` lines of one entry (the DN line first), from `ldapsearch -LLL`.
fn entry(slapd: &impl LdapServer, base: &str, filter: &str) -> Vec<String> {
    let out = slapd.ldapsearch(base, filter, &["*"]);
    out.lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

fn dns(slapd: &impl LdapServer, base: &str, filter: &str) -> Vec<String> {
    let out = slapd.ldapsearch(base, filter, &["1.1"]);
    let mut dns: Vec<String> =
        out.lines().filter_map(|l| l.strip_prefix("dn: ")).map(|d| d.to_ascii_lowercase()).collect();
    dns.sort();
    dns
}

/// Runs an import of `kind` (full or delta) on `connector` and returns its report.
fn import(s: &Supervisor, connector: &str, kind: &str) -> Value {
    let r =
        request(s.admin, "POST", &format!("/admin/connectors/{connector}/import?type={kind}"), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn values(lines: &[String], attribute: &str) -> Vec<String> {
    let prefix = format!("{attribute}: ");
    let mut v: Vec<String> = lines.iter().filter_map(|l| l.strip_prefix(&prefix)).map(String::from).collect();
    v.sort();
    v
}

#[test]
fn users_and_groups_are_provisioned_modified_renamed_and_deleted() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-users");
    let s = start(&slapd, &dir, &example());
    users_and_groups_round_trip(&slapd, &s);
}

#[test]
fn users_and_groups_round_trip_through_389_directory_server() {
    let ds = DirSrv::start();
    let dir = TempDir::new("dirsrv-users");
    let s = start_on(&ds, &dir, &example(), &[("LDAP_SECURITY", "none")]);
    users_and_groups_round_trip(&ds, &s);
}

/// Creates, modifies, renames, groups and deletes users through SCIM on a supervisor running
/// the example against `slapd`, checking the directory with `ldapsearch` at each step.
fn users_and_groups_round_trip(slapd: &impl LdapServer, s: &Supervisor) {
    let base = slapd.suffix().to_string();
    let people = format!("ou=People,{base}");

    let alice = post(s, "Users", &user("alice", "Alice A"));
    let bob = post(s, "Users", &user("bob", "Bob B"));
    let carol = post(s, "Users", &user("carol", "Carol C"));
    let e = entry(&slapd, &people, "(uid=alice)");
    assert_eq!(e[0], format!("dn: uid=alice,{people}"));
    assert_eq!(values(&e, "cn"), ["Alice A"]);
    assert_eq!(values(&e, "sn"), ["Family alice"]);
    assert_eq!(values(&e, "mail"), ["alice@example.com"]);
    // (389 DS stores the superclasses too.)
    assert!(values(&e, "objectClass").iter().any(|c| c.eq_ignore_ascii_case("inetOrgPerson")), "{e:?}");
    // The SCIM id does not leak into the directory, and the anchor is the entryUUID.
    let uuid = slapd.ldapsearch(&people, "(uid=alice)", &["entryUUID"]);
    assert!(uuid.contains("entryUUID: "), "{uuid}");

    // A duplicate is refused by SCIM (409), and the directory keeps one entry.
    let r = s.scim("POST", "/scim/directory/Users", Some(&user("alice", "again").to_string()));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(dns(&slapd, &base, "(uid=alice)").len(), 1);

    // Modify: replace one attribute, remove another.
    let id = alice["id"].as_str().unwrap();
    let r = patch(
        s,
        &format!("Users/{id}"),
        json!([
            {"op": "Replace", "path": "displayName", "value": "Alice Anders"},
            {"op": "Remove", "path": "name.givenName"}
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let e = entry(&slapd, &people, "(uid=alice)");
    assert_eq!(values(&e, "displayName"), ["Alice Anders"]);
    assert!(values(&e, "givenName").is_empty(), "{e:?}");

    // Manager: a reference, written as the manager's DN.
    let r = patch(
        s,
        &format!("Users/{}", bob["id"].as_str().unwrap()),
        json!([{
        "op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        "value": {"value": id}}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(values(&entry(&slapd, &people, "(uid=bob)"), "manager"), [format!("uid=alice,{people}")]);
    // Entra's short path `manager`, both ways: removed and set again, in SCIM and in the directory.
    let bob_path = format!("Users/{}", bob["id"].as_str().unwrap());
    let r = patch(s, &bob_path, json!([{"op": "Remove", "path": "manager"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get(ENTERPRISE).is_none_or(|e| e.get("manager").is_none()), "{}", r.body);
    assert!(values(&entry(&slapd, &people, "(uid=bob)"), "manager").is_empty());
    let r = patch(s, &bob_path, json!([{"op": "Add", "path": "manager", "value": [{"value": id}]}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(values(&entry(&slapd, &people, "(uid=bob)"), "manager"), [format!("uid=alice,{people}")]);

    // Rename: a new userName is a new DN (ModifyDN), the entry keeps its entryUUID.
    let r = patch(
        s,
        &format!("Users/{id}"),
        json!([{"op": "Replace", "path": "userName", "value": "alice.anders"}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(dns(&slapd, &base, "(uid=alice)").is_empty());
    let renamed = slapd.ldapsearch(&people, "(uid=alice.anders)", &["entryUUID"]);
    assert_eq!(
        renamed.lines().find(|l| l.starts_with("entryUUID")),
        uuid.lines().find(|l| l.starts_with("entryUUID"))
    );

    // Groups: members are DNs; adding and removing one member changes only that value.
    let group = post(
        s,
        "Groups",
        &json!({"schemas": [GROUP], "displayName": "Engineers",
        "members": [{"value": id}, {"value": bob["id"]}]}),
    );
    let groups = format!("ou=Groups,{base}");
    let members = || values(&entry(slapd, &groups, "(cn=Engineers)"), "member");
    assert_eq!(members(), [format!("uid=alice.anders,{people}"), format!("uid=bob,{people}")]);
    let gid = group["id"].as_str().unwrap();
    let r = patch(
        s,
        &format!("Groups/{gid}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": carol["id"]}]}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = patch(
        s,
        &format!("Groups/{gid}"),
        json!([{"op": "Remove", "path": format!("members[value eq \"{}\"]", bob["id"].as_str().unwrap())}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(), [format!("uid=alice.anders,{people}"), format!("uid=carol,{people}")]);
    // The last members go: groupOfNames needs one, so the placeholder stands in; SCIM shows none.
    let r = patch(s, &format!("Groups/{gid}"), json!([{"op": "Remove", "path": "members"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(), ["cn=nobody"]);
    let g = s.scim("GET", &format!("/scim/directory/Groups/{gid}"), None).json();
    assert!(g["members"].as_array().is_none_or(|m| m.is_empty()), "{g}");
    // A member again: the placeholder goes.
    let r = patch(
        s,
        &format!("Groups/{gid}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": bob["id"]}]}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(), [format!("uid=bob,{people}")]);

    // Delete: gone from the directory and from SCIM.
    assert_eq!(
        s.scim("DELETE", &format!("/scim/directory/Users/{}", carol["id"].as_str().unwrap()), None).status,
        204
    );
    assert!(dns(&slapd, &base, "(uid=carol)").is_empty());
    assert_eq!(
        s.scim("GET", &format!("/scim/directory/Users/{}", carol["id"].as_str().unwrap()), None).status,
        404
    );
}

#[test]
fn a_group_with_thousands_of_members_takes_one_member_change_at_a_time() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-big-group");
    let s = start(&slapd, &dir, &example());
    let base = slapd.suffix().to_string();
    // Users made in the directory, then imported: quicker than thousands of SCIM creates.
    let mut ldif = String::new();
    for i in 0..3000 {
        ldif.push_str(&format!(
            "dn: uid=m{i},ou=People,{base}\nobjectClass: inetOrgPerson\nuid: m{i}\ncn: Member {i}\nsn: M\n\n"
        ));
    }
    slapd.ldapmodify(&ldif);
    let report = import(&s, "ldap-users", "full");
    assert_eq!(report["added"], 3000, "{report}");
    let mut ids: Vec<String> = Vec::new();
    while ids.len() < 3000 {
        let page = s
            .scim(
                "GET",
                &format!("/scim/directory/Users?startIndex={}&count=1000&attributes=userName", ids.len() + 1),
                None,
            )
            .json();
        let resources = page["Resources"].as_array().unwrap();
        assert!(!resources.is_empty(), "{page}");
        ids.extend(resources.iter().map(|u| u["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(ids.len(), 3000);
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let group =
        post(&s, "Groups", &json!({"schemas": [GROUP], "displayName": "Everyone", "members": members}));
    let count = |slapd: &Slapd| {
        slapd
            .ldapsearch(&format!("ou=Groups,{base}"), "(cn=Everyone)", &["member"])
            .lines()
            .filter(|l| l.starts_with("member: "))
            .count()
    };
    assert_eq!(count(&slapd), 3000);
    let gid = group["id"].as_str().unwrap();
    let r = patch(
        &s,
        &format!("Groups/{gid}"),
        json!([{"op": "Remove", "path": format!("members[value eq \"{}\"]", ids[17])}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(count(&slapd), 2999);
    let e = slapd.ldapsearch(
        &format!("ou=Groups,{base}"),
        "(member=uid=m17,ou=People,dc=example,dc=com)",
        &["cn"],
    );
    assert!(!e.contains("cn: Everyone"), "m17 left the group");
}

#[test]
fn injection_through_user_names_display_names_and_member_ids_stays_data() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-injection");
    let s = start(&slapd, &dir, &example());
    injection_stays_data(&slapd, &s);
}

#[test]
fn injection_into_389_directory_server_stays_data() {
    let ds = DirSrv::start();
    let dir = TempDir::new("dirsrv-injection");
    let s = start_on(&ds, &dir, &example(), &[("LDAP_SECURITY", "none")]);
    injection_stays_data(&ds, &s);
}

/// DN and filter metacharacters in userName, displayName and member ids land as data.
fn injection_stays_data(slapd: &impl LdapServer, s: &Supervisor) {
    let base = slapd.suffix().to_string();
    let people = format!("ou=People,{base}");
    // DN metacharacters and filter metacharacters in the name that makes the DN.
    let nasty = r#"evil,ou=Groups+cn=x\"<>;#=)(uid=*"#;
    let display = "*)(objectClass=*))(|(cn=*";
    let u = post(s, "Users", &user(nasty, display));
    let out = slapd.ldapsearch(&base, "(objectClass=inetOrgPerson)", &["uid", "displayName"]);
    // One entry, under ou=People, whose uid is the name byte for byte.
    assert_eq!(out.matches("dn: ").count() + out.matches("dn:: ").count(), 1, "{out}");
    let uid =
        slapd.ldapsearch(&people, &format!("(uid={})", ldap_filter_escape(nasty)), &["uid", "displayName"]);
    assert!(uid.contains(&format!("displayName: {display}")), "{uid}");
    assert!(
        dns(&slapd, &format!("ou=Groups,{base}"), "(objectClass=*)") == [format!("ou=groups,{base}")],
        "nothing landed in ou=Groups"
    );
    // A lookup by that name over SCIM finds exactly that user.
    let filter = format!("userName eq \"{}\"", nasty.replace('\\', "\\\\").replace('"', "\\\""));
    let found = s.scim("GET", &format!("/scim/directory/Users?filter={}", urlencode(&filter)), None).json();
    assert_eq!(found["totalResults"], 1, "{found}");
    assert_eq!(found["Resources"][0]["id"], u["id"]);
    // A member id that is a filter or a DN is not a known SCIM id: refused, nothing written.
    for bad in ["*", "x)(member=*", &format!("uid=admin,{base}")] {
        let r = s.scim(
            "POST",
            "/scim/directory/Groups",
            Some(&json!({"schemas": [GROUP], "displayName": "G", "members": [{"value": bad}]}).to_string()),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert!(dns(&slapd, &base, "(objectClass=groupOfNames)").is_empty());
}

#[test]
fn imports_see_adds_changes_renames_and_deletes_made_in_the_directory() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-import");
    let s = start(&slapd, &dir, &example());
    directory_changes_reach_scim(&slapd, &s);
}

#[test]
fn changelog_deltas_from_389_directory_server_see_renames_and_deletes() {
    // The Content Synchronization plug-in is on too, but its sync control names deleted
    // entries by nsUniqueId, not by the example's entryUUID anchor: "auto" picks the retro
    // changelog (cn=changelog), whose records carry targetEntryUUID. (Were sync picked, the
    // deletes below would not reach SCIM.)
    let ds = DirSrv::start_with(DirSrvOptions { content_sync: true, ..Default::default() });
    let dir = TempDir::new("dirsrv-changelog");
    let s = start_on(&ds, &dir, &example(), &[("LDAP_SECURITY", "none")]);
    directory_changes_reach_scim(&ds, &s);
}

#[test]
fn content_sync_deltas_from_389_directory_server_with_nsuniqueid_anchors() {
    // RFC 4533 against 389 DS: anchors are nsUniqueId (what its sync control names deleted
    // entries by); changed entries arrive without operational attributes and are read again.
    let ds = DirSrv::start_with(DirSrvOptions { content_sync: true, ..Default::default() });
    let dir = TempDir::new("dirsrv-sync");
    let config = example().replace(
        "create_containers = true\n\n# connector attribute",
        "create_containers = true\ndelta_method = \"sync\"\nanchor_attribute = \"nsUniqueId\"\n\n# connector attribute",
    );
    assert!(config.contains("nsUniqueId"));
    let s = start_on(&ds, &dir, &config, &[("LDAP_SECURITY", "none")]);
    directory_changes_reach_scim(&ds, &s);
}

#[test]
fn starttls_and_ldaps_to_389_directory_server_with_its_own_ca() {
    // dscreate's self-signed CA and server certificate (subjectAltName DNS:localhost, kept in
    // NSS by the server); the connector checks the chain and the name with rustls.
    let ds = DirSrv::start_with(DirSrvOptions { tls: true, ..Default::default() });
    let ca = ds.ca_file().display().to_string();
    let dir = TempDir::new("dirsrv-tls");
    let s = start_on(&ds, &dir, &example(), &[("LDAP_URL", &ds.tls_url()), ("LDAP_CA_FILE", &ca)]);
    post(&s, "Users", &user("tess", "Tess T"));
    let people = format!("ou=People,{}", ds.suffix());
    assert_eq!(dns(&ds, &people, "(uid=tess)"), [format!("uid=tess,{}", people.to_ascii_lowercase())]);
    drop(s);
    let dir = TempDir::new("dirsrv-ldaps");
    let s = start_on(&ds, &dir, &example(), &[("LDAP_URL", &ds.ldaps_url()), ("LDAP_CA_FILE", &ca)]);
    post(&s, "Users", &user("lars", "Lars L"));
    assert_eq!(dns(&ds, &people, "(uid=lars)").len(), 1);
    // Without that CA (the system's roots), the handshake fails and the connector says so.
    let dir = TempDir::new("dirsrv-tls-untrusted");
    let s = Supervisor::spawn_with_env(
        &example(),
        dir.path(),
        &[
            ("LDAP_URL", &ds.tls_url()),
            ("LDAP_BIND_DN", &ds.admin_dn()),
            ("LDAP_BIND_PASSWORD", ds.admin_password()),
            ("LDAP_BASE_DN", ds.suffix()),
        ],
    );
    s.wait_admin_up();
    let c = s.wait_connector("ldap-users", Duration::from_secs(30), |c| c["reason"].is_string());
    assert!(c["reason"].as_str().unwrap().contains("TLS failure"), "{c}");
}

#[test]
fn a_changelog_delta_names_a_missing_anchor_attribute() {
    // The retro changelog copies entryUUID as targetEntryUUID; told to look for another
    // attribute, the delta fails with a message that says what to configure.
    let ds = DirSrv::start();
    let dir = TempDir::new("dirsrv-changelog-anchor");
    let config = example().replace(
        "create_containers = true\n\n# connector attribute",
        "create_containers = true\ndelta_method = \"changelog\"\nchangelog_anchor_attribute = \"targetNothing\"\n\n# connector attribute",
    );
    assert!(config.contains("targetNothing"));
    let s = start_on(&ds, &dir, &config, &[("LDAP_SECURITY", "none")]);
    s.wait_connector("ldap-users", Duration::from_secs(20), |c| !c["last_import"].is_null());
    let base = ds.suffix().to_string();
    ds.ldapmodify(&format!(
        "dn: uid=lee,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: lee\ncn: Lee\nsn: L\n"
    ));
    let r = request(s.admin, "POST", "/admin/connectors/ldap-users/import?type=delta", None, None);
    assert_ne!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("nsslapd-attribute: entryuuid:targetNothing"), "{}", r.body);
}

/// Adds, modifies, renames and deletes entries in `slapd` behind the supervisor's back, and
/// checks that delta imports bring each change into SCIM.
fn directory_changes_reach_scim(slapd: &impl LdapServer, s: &Supervisor) {
    for c in ["ldap-users", "ldap-groups"] {
        s.wait_connector(c, Duration::from_secs(20), |c| !c["last_import"].is_null());
    }
    let base = slapd.suffix().to_string();
    slapd.ldapmodify(&format!(
        "dn: uid=dora,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: dora\ncn: Dora\nsn: D\n\n\
         dn: uid=ed,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: ed\ncn: Ed\nsn: E\n\n\
         dn: uid=fay,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: fay\ncn: Fay\nsn: F\n"
    ));
    let import = |kind: &str| import(s, "ldap-users", kind);
    let report = import("delta");
    assert_eq!(report["added"], 3, "{report}");
    let by_name = |name: &str| {
        s.scim("GET", &format!("/scim/directory/Users?filter=userName+eq+%22{name}%22"), None).json()
    };
    assert_eq!(by_name("dora")["totalResults"], 1);
    // Changes made in the directory: a modify, a rename, a delete.
    slapd.ldapmodify(&format!(
        "dn: uid=dora,ou=People,{base}\nchangetype: modify\nreplace: displayName\ndisplayName: Dora Changed\n\n\
         dn: uid=ed,ou=People,{base}\nchangetype: modrdn\nnewrdn: uid=edward\ndeleteoldrdn: 1\n\n\
         dn: uid=fay,ou=People,{base}\nchangetype: delete\n"
    ));
    let report = import("delta");
    assert_eq!((report["updated"].as_u64(), report["deleted"].as_u64()), (Some(2), Some(1)), "{report}");
    assert_eq!(by_name("dora")["Resources"][0]["displayName"], "Dora Changed");
    assert_eq!(by_name("fay")["totalResults"], 0, "the delete reached SCIM");
    assert_eq!(by_name("ed")["totalResults"], 0);
    assert_eq!(by_name("edward")["totalResults"], 1, "the rename reached SCIM");
    // A second delta without changes finds nothing; a full import agrees with the directory.
    let report = import("delta");
    assert_eq!(
        (report["added"].as_u64(), report["updated"].as_u64(), report["deleted"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{report}"
    );
    let report = import("full");
    assert_eq!(report["errors"], 0, "{report}");
    let list = s.scim("GET", "/scim/directory/Users", None).json();
    assert_eq!(list["totalResults"], 2, "{list}");
}

#[test]
fn timestamp_deltas_where_the_server_has_no_sync_provider() {
    let slapd = Slapd::start_with(e2e::slapd::SlapdOptions { syncprov: false, ..Default::default() });
    let dir = TempDir::new("ldap-timestamp");
    let s = start(&slapd, &dir, &example());
    let base = slapd.suffix().to_string();
    slapd.ldapmodify(&format!(
        "dn: uid=gus,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: gus\ncn: Gus\nsn: G\n"
    ));
    let import = |kind: &str| import(&s, "ldap-users", kind);
    assert_eq!(import("full")["added"], 1);
    slapd.ldapmodify(&format!(
        "dn: uid=gus,ou=People,{base}\nchangetype: modify\nreplace: displayName\ndisplayName: Gus Two\n"
    ));
    let report = import("delta");
    assert_eq!(report["updated"], 1, "{report}");
    let gus = s.scim("GET", "/scim/directory/Users?filter=userName+eq+%22gus%22", None).json();
    assert_eq!(gus["Resources"][0]["displayName"], "Gus Two");
}

#[test]
fn connection_problems_are_named_and_sasl_external_over_ldaps_works() {
    let slapd = Slapd::start();
    let base = slapd.suffix().to_string();
    // A wrong password: the connector fails its configuration check with the LDAP reason.
    let dir = TempDir::new("ldap-badpw");
    let s = Supervisor::spawn_with_env(
        &example(),
        dir.path(),
        &[
            ("LDAP_URL", &slapd.url()),
            ("LDAP_BIND_DN", &slapd.admin_dn()),
            ("LDAP_BIND_PASSWORD", "wrong-password"),
            ("LDAP_BASE_DN", &base),
            ("LDAP_CA_FILE", &slapd.ca_file().display().to_string()),
        ],
    );
    s.wait_admin_up();
    // Degraded (the target refuses), not a crash loop: the reason names the LDAP result.
    let c = s.wait_connector("ldap-users", Duration::from_secs(30), |c| c["reason"].is_string());
    assert_eq!(c["state"], "degraded", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("invalidCredentials (49)"), "{c}");
    assert!(!s.log().contains("wrong-password"), "the password is never logged");
    drop(s);

    // A CA that did not sign the server's certificate: a TLS failure, named as such.
    let dir = TempDir::new("ldap-badca");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, rcgen_ca_pem()).unwrap();
    let s = Supervisor::spawn_with_env(
        &example(),
        dir.path(),
        &[
            ("LDAP_URL", &slapd.url()),
            ("LDAP_BIND_DN", &slapd.admin_dn()),
            ("LDAP_BIND_PASSWORD", slapd.admin_password()),
            ("LDAP_BASE_DN", &base),
            ("LDAP_CA_FILE", &other_ca.display().to_string()),
        ],
    );
    s.wait_admin_up();
    let c = s.wait_connector("ldap-users", Duration::from_secs(30), |c| c["reason"].is_string());
    assert!(c["reason"].as_str().unwrap().contains("TLS failure"), "{c}");
    drop(s);

    // ldaps:// with a client certificate and SASL EXTERNAL (mapped to the admin by slapd).
    let (cert, key) = slapd.client_cert();
    let config = example().replace(
        "bind_dn = \"${LDAP_BIND_DN}\"\nbind_password = { env = \"LDAP_BIND_PASSWORD\" }",
        &format!(
            "bind_method = \"sasl_external\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    assert!(config.contains("sasl_external"));
    let dir = TempDir::new("ldap-external");
    let s = Supervisor::spawn_with_env(
        &config,
        dir.path(),
        &[
            ("LDAP_URL", &slapd.ldaps_url()),
            ("LDAP_BASE_DN", &base),
            ("LDAP_CA_FILE", &slapd.ca_file().display().to_string()),
        ],
    );
    s.wait_ready(Duration::from_secs(30));
    post(&s, "Users", &user("ext", "Over EXTERNAL"));
    assert_eq!(dns(&slapd, &base, "(uid=ext)"), [format!("uid=ext,ou=people,{base}")]);
}

#[test]
fn a_slapd_restart_in_a_burst_loses_nothing_and_duplicates_nothing() {
    let mut slapd = Slapd::start();
    let dir = TempDir::new("ldap-restart");
    let s = start(&slapd, &dir, &example());
    restart_in_a_burst(&mut slapd, &s);
}

#[test]
fn a_389_directory_server_restart_in_a_burst_loses_nothing_and_duplicates_nothing() {
    let mut ds = DirSrv::start();
    let dir = TempDir::new("dirsrv-restart");
    let s = start_on(&ds, &dir, &example(), &[("LDAP_SECURITY", "none")]);
    restart_in_a_burst(&mut ds, &s);
}

#[test]
fn an_add_whose_answer_is_lost_is_looked_up_not_repeated_or_dropped() {
    // A proxy between connector and slapd forwards one add, drops slapd's answer and closes the
    // connection: the entry exists, the connector cannot know. The connector reports the
    // entry's outcome as unknown; the supervisor looks the object up and confirms it.
    let slapd = Slapd::start();
    let upstream: std::net::SocketAddr = slapd.url().trim_start_matches("ldap://").parse().unwrap();
    let proxy = e2e::cut_proxy::CutProxy::start(upstream);
    let dir = TempDir::new("ldap-lost-answer");
    let url = proxy.url();
    let s = start_on(&slapd, &dir, &example(), &[("LDAP_URL", &url), ("LDAP_SECURITY", "none")]);
    post(&s, "Users", &user("before", "Before"));
    proxy.arm();
    let r = s.scim("POST", "/scim/directory/Users", Some(&user("cut", "Cut Off").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(proxy.cuts(), 1, "the proxy dropped an answer");
    let people = format!("ou=People,{}", slapd.suffix());
    assert_eq!(dns(&slapd, &people, "(uid=cut)").len(), 1, "one entry, not a second add");
    let found = s.scim("GET", "/scim/directory/Users?filter=userName+eq+%22cut%22", None).json();
    assert_eq!(found["totalResults"], 1, "{found}");
    assert_eq!(found["Resources"][0]["id"], r.json()["id"]);
    // The connector kept serving through a new connection.
    post(&s, "Users", &user("after", "After"));
    assert_eq!(s.connector("ldap-users")["state"], "ready");
}

/// Creates 60 users through SCIM while the directory restarts; each must be there once.
fn restart_in_a_burst(slapd: &mut impl LdapServer, s: &Supervisor) {
    let scim = s.scim;
    let names: Vec<String> = (0..60).map(|i| format!("burst{i}")).collect();
    let burst = {
        let names = names.clone();
        std::thread::spawn(move || {
            for name in &names {
                e2e::create_retrying(scim, "directory", name, Duration::from_secs(60));
            }
        })
    };
    // The directory goes down once the burst is under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while slapd.entry_count(&format!("ou=People,{}", slapd.suffix()), "(uid=burst*)") < 5 {
        assert!(std::time::Instant::now() < deadline, "the burst never started");
        std::thread::yield_now();
    }
    slapd.restart();
    burst.join().expect("the burst finished");
    let base = slapd.suffix().to_string();
    for name in &names {
        assert_eq!(
            dns(&*slapd, &base, &format!("(uid={name})")).len(),
            1,
            "{name} exactly once in the directory"
        );
    }
    let list = s.scim("GET", "/scim/directory/Users?count=200", None).json();
    assert_eq!(list["totalResults"], 60, "{list}");
    // The connector reconnected without being restarted.
    assert_eq!(s.connector("ldap-users")["state"], "ready");
}

fn ldap_filter_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => "\\2a".into(),
            '(' => "\\28".into(),
            ')' => "\\29".into(),
            '\\' => "\\5c".into(),
            c => c.to_string(),
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn rcgen_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn passwords_are_set_in_the_add_and_changed_on_their_own_and_never_stored() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-password");
    let s = start(&slapd, &dir, &example());
    let base = slapd.suffix().to_string();
    let bind_ok = |dn: &str, password: &str| {
        std::process::Command::new("ldapwhoami")
            .env("LDAPNOINIT", "1")
            .args(["-x", "-H", &slapd.url(), "-D", dn, "-w", password])
            .output()
            .expect("ldapwhoami")
            .status
            .success()
    };
    let mut body = user("pat", "Pat");
    body["password"] = json!("Initial-Secret-1");
    let created = post(&s, "Users", &body);
    assert!(created.get("password").is_none(), "never returned");
    let dn = format!("uid=pat,ou=People,{base}");
    assert!(bind_ok(&dn, "Initial-Secret-1"), "the initial password came with the add");
    // A change by PATCH (as Entra sends it) goes to the directory by the Password Modify
    // operation; the old one stops working.
    let id = created["id"].as_str().unwrap();
    let r = patch(
        &s,
        &format!("Users/{id}"),
        json!([{"op": "replace", "path": "password", "value": "Changed-Secret-2"}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(bind_ok(&dn, "Changed-Secret-2"));
    assert!(!bind_ok(&dn, "Initial-Secret-1"));
    // Neither password is in the store, the log, or a SCIM read.
    let get = s.scim("GET", &format!("/scim/directory/Users/{id}"), None);
    assert!(!get.body.contains("Secret"), "{}", get.body);
    let store = std::fs::read(dir.path().join("connector-space.db")).expect("the store");
    let wal = std::fs::read(dir.path().join("connector-space.db-wal")).unwrap_or_default();
    for secret in ["Initial-Secret-1", "Changed-Secret-2"] {
        assert!(!s.log().contains(secret), "{secret} in the log");
        for bytes in [&store, &wal] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in the store");
        }
    }
}

#[test]
fn group_of_unique_names_is_configurable() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-unique");
    let config = example()
        .replace("object_type = \"groupOfNames\"", "object_type = \"groupOfUniqueNames\"")
        .replace("object_class = \"groupOfNames\"", "object_class = \"groupOfUniqueNames\"")
        .replace("member = \"members.value\"", "uniqueMember = \"members.value\"");
    let s = start(&slapd, &dir, &config);
    let base = slapd.suffix().to_string();
    let u = post(&s, "Users", &user("una", "Una"));
    let g = post(&s, "Groups", &json!({"schemas": [GROUP], "displayName": "Uniques"}));
    let groups = format!("ou=Groups,{base}");
    let members = || values(&entry(&slapd, &groups, "(cn=Uniques)"), "uniqueMember");
    assert_eq!(members(), ["cn=nobody"], "an empty group holds the placeholder");
    let gid = g["id"].as_str().unwrap();
    let r = patch(
        &s,
        &format!("Groups/{gid}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": u["id"]}]}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(), [format!("uid=una,ou=People,{base}")]);
    assert_eq!(values(&entry(&slapd, &groups, "(cn=Uniques)"), "objectClass"), ["groupOfUniqueNames"]);
    // Imported back, the member is the SCIM user.
    import(&s, "ldap-groups", "full");
    let got = s.scim("GET", &format!("/scim/directory/Groups/{gid}"), None).json();
    assert_eq!(got["members"][0]["value"], u["id"], "{got}");
}

#[test]
fn a_dn_expression_places_entries_creates_containers_and_moves_them() {
    let slapd = Slapd::start();
    let dir = TempDir::new("ldap-move");
    // The OU comes from the title: Engineers under ou=Eng, everyone else under ou=Staff; neither
    // exists yet.
    let config = example().replace(
        r#"dn = 'Join("", "uid=", [userName], ",ou=People,${LDAP_BASE_DN}")'"#,
        r#"dn = 'Join("", "uid=", [userName], ",", Switch([title], "ou=Staff", "Engineer", "ou=Eng"), ",ou=People,${LDAP_BASE_DN}")'"#,
    );
    assert!(config.contains("Switch([title]"));
    let s = start(&slapd, &dir, &config);
    let base = slapd.suffix().to_string();
    let mut body = user("hana", "Hana");
    body["title"] = json!("Engineer");
    let hana = post(&s, "Users", &body);
    assert_eq!(dns(&slapd, &base, "(uid=hana)"), [format!("uid=hana,ou=eng,ou=people,{base}")]);
    assert_eq!(
        dns(&slapd, &base, "(ou=Eng)"),
        [format!("ou=eng,ou=people,{base}")],
        "the container was created"
    );
    // A new title moves the entry to the other container (created on the way).
    let id = hana["id"].as_str().unwrap();
    let r =
        patch(&s, &format!("Users/{id}"), json!([{"op": "Replace", "path": "title", "value": "Accountant"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(dns(&slapd, &base, "(uid=hana)"), [format!("uid=hana,ou=staff,ou=people,{base}")]);
    assert_eq!(values(&entry(&slapd, &base, "(uid=hana)"), "title"), ["Accountant"]);
    // A group that holds her follows the move (the member value is her DN as the store has it).
    let g =
        post(&s, "Groups", &json!({"schemas": [GROUP], "displayName": "Movers", "members": [{"value": id}]}));
    assert_eq!(
        values(&entry(&slapd, &format!("ou=Groups,{base}"), "(cn=Movers)"), "member"),
        [format!("uid=hana,ou=Staff,ou=People,{base}")]
    );
    // Moved again: the group names her new DN without being written through SCIM (the
    // connector rewrites the references of a renamed entry, as refint would).
    let r =
        patch(&s, &format!("Users/{id}"), json!([{"op": "Replace", "path": "title", "value": "Engineer"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let members =
        |slapd: &Slapd| values(&entry(slapd, &format!("ou=Groups,{base}"), "(cn=Movers)"), "member");
    assert_eq!(members(&slapd), [format!("uid=hana,ou=Eng,ou=People,{base}")]);
    // A later change of the group, computed from the old DN, still leaves one right value.
    let other = post(&s, "Users", &user("ivan", "Ivan"));
    let gid = g["id"].as_str().unwrap();
    let r = patch(
        &s,
        &format!("Groups/{gid}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": other["id"]}]}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        members(&slapd),
        [format!("uid=hana,ou=Eng,ou=People,{base}"), format!("uid=ivan,ou=Staff,ou=People,{base}")]
    );
    let got = s.scim("GET", &format!("/scim/directory/Groups/{gid}"), None).json();
    assert_eq!(got["members"].as_array().map(Vec::len), Some(2), "{got}");
}

#[test]
fn an_unreachable_directory_is_named() {
    let dir = TempDir::new("ldap-unreachable");
    let closed = e2e::free_addr();
    let s = Supervisor::spawn_with_env(
        &example(),
        dir.path(),
        &[
            ("LDAP_URL", &format!("ldap://{closed}")),
            ("LDAP_BIND_DN", "cn=admin,dc=example,dc=com"),
            ("LDAP_BIND_PASSWORD", "irrelevant-password"),
            ("LDAP_BASE_DN", "dc=example,dc=com"),
        ],
    );
    s.wait_admin_up();
    let c = s.wait_connector("ldap-users", Duration::from_secs(30), |c| c["reason"].is_string());
    assert_eq!(c["state"], "degraded", "{c}");
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("connecting to ldap://{closed}")) && reason.contains("refused"), "{c}");
    // SCIM writes meanwhile get 503 with Retry-After, and nothing is recorded.
    let r = s.scim("POST", "/scim/directory/Users", Some(&user("nobody", "No One").to_string()));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn accesslog_deltas_where_the_server_has_no_sync_provider_but_logs_writes() {
    let slapd = Slapd::start_with(e2e::slapd::SlapdOptions {
        syncprov: false,
        accesslog: true,
        ..Default::default()
    });
    let dir = TempDir::new("ldap-accesslog");
    let s = start(&slapd, &dir, &example());
    s.wait_connector("ldap-users", Duration::from_secs(20), |c| !c["last_import"].is_null());
    let base = slapd.suffix().to_string();
    let import = |kind: &str| import(&s, "ldap-users", kind);
    slapd.ldapmodify(&format!(
        "dn: uid=jo,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: jo\ncn: Jo\nsn: J\n\n\
         dn: uid=kim,ou=People,{base}\nobjectClass: inetOrgPerson\nuid: kim\ncn: Kim\nsn: K\n"
    ));
    let report = import("delta");
    assert_eq!(report["added"], 2, "{report}");
    slapd.ldapmodify(&format!(
        "dn: uid=jo,ou=People,{base}\nchangetype: modrdn\nnewrdn: uid=joanna\ndeleteoldrdn: 1\n\n\
         dn: uid=kim,ou=People,{base}\nchangetype: delete\n"
    ));
    let report = import("delta");
    assert_eq!((report["updated"].as_u64(), report["deleted"].as_u64()), (Some(1), Some(1)), "{report}");
    let by_name = |name: &str| {
        s.scim("GET", &format!("/scim/directory/Users?filter=userName+eq+%22{name}%22"), None).json()["totalResults"]
            .clone()
    };
    assert_eq!((by_name("joanna"), by_name("jo"), by_name("kim")), (json!(1), json!(0), json!(0)));
    // Nothing new: nothing reported (the boundary entry read again changes nothing).
    let report = import("delta");
    assert_eq!(
        (report["added"].as_u64(), report["updated"].as_u64(), report["deleted"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{report}"
    );
}
