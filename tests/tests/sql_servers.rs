//! connector-sql against a real PostgreSQL and a real MariaDB (throwaway servers started by the
//! tests), driven through the supervisor's SCIM front with the shipped examples
//! `deploy/examples/postgres.toml` and `deploy/examples/mariadb.toml`; the tables are inspected
//! with plain SQL.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::databases::{MariaDb, Postgres, execute, query};
use e2e::{Supervisor, TempDir, request, workspace};
use serde_json::{Value, json};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

#[derive(Clone, Copy, PartialEq)]
enum Db {
    Postgres,
    MariaDb,
}

impl Db {
    fn example(self) -> String {
        let file = match self {
            Db::Postgres => "deploy/examples/postgres.toml",
            Db::MariaDb => "deploy/examples/mariadb.toml",
        };
        std::fs::read_to_string(workspace().join(file)).expect("read example")
    }

    /// A positional parameter in this database's SQL.
    fn p(self, n: usize) -> String {
        match self {
            Db::Postgres => format!("${n}"),
            Db::MariaDb => "?".to_string(),
        }
    }

    /// Sets the watermark column the way any writer to the table must (MariaDB's column moves
    /// by itself: ON UPDATE CURRENT_TIMESTAMP).
    fn touch(self) -> &'static str {
        match self {
            Db::Postgres => ", updated_at = now()",
            Db::MariaDb => "",
        }
    }
}

fn start(db: Db, url: &str, dir: &TempDir) -> Supervisor {
    let s = Supervisor::spawn_with_env(&db.example(), dir.path(), &[("DATABASE_URL", url)]);
    s.wait_ready(Duration::from_secs(30));
    s
}

fn post(s: &Supervisor, endpoint: &str, body: &Value) -> Value {
    let r = s.scim("POST", &format!("/scim/sql/{endpoint}"), Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn patch(s: &Supervisor, path: &str, ops: Value) -> e2e::Response {
    let body = json!({"schemas": [PATCH], "Operations": ops});
    s.scim("PATCH", &format!("/scim/sql/{path}"), Some(&body.to_string()))
}

fn user(name: &str, display: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "displayName": display, "active": true,
           "name": {"givenName": "Given", "familyName": format!("Family {name}")},
           "emails": [{"type": "work", "value": format!("{name}@example.com"), "primary": true}]})
}

/// A boolean column, selected as 0 or 1.
fn truthy(v: &Value) -> bool {
    v.as_i64().expect("a boolean column as 0/1") != 0
}

fn user_row(db: Db, url: &str, user_name: &str) -> Option<Value> {
    let sql = format!(
        "SELECT id, user_name, display_name, email, CASE WHEN active THEN 1 ELSE 0 END AS active \
         FROM users WHERE user_name = {}",
        db.p(1)
    );
    query(url, &sql, &[user_name]).into_iter().next()
}

fn members(url: &str, group_id: &str, db: Db) -> BTreeSet<String> {
    let sql = format!("SELECT value FROM groups_members WHERE owner = {}", db.p(1));
    query(url, &sql, &[group_id]).iter().map(|r| r["value"].as_str().unwrap().to_string()).collect()
}

fn import(s: &Supervisor, connector: &str, kind: &str) -> Value {
    let r =
        request(s.admin, "POST", &format!("/admin/connectors/{connector}/import?type={kind}"), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn find_users(s: &Supervisor, user_name: &str) -> Value {
    let r = s.scim("GET", &format!("/scim/sql/Users?filter=userName+eq+%22{user_name}%22"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Users and groups through SCIM into tables the connector created: the rows, their updates,
/// group members by anchor, one member added and one removed, a unique violation naming the
/// column, deletes, and values that try SQL injection landing as plain strings.
fn provisions_users_and_groups(db: Db, url: &str) {
    let dir = TempDir::new("sql-server");
    let s = start(db, url, &dir);

    let injection = "'; DROP TABLE users; --";
    let alice = post(&s, "Users", &user("alice", injection));
    let row = user_row(db, url, "alice").expect("alice's row");
    assert_eq!(row["display_name"], injection, "{row}");
    assert_eq!(row["email"], "alice@example.com");
    assert!(truthy(&row["active"]));
    let alice_anchor = row["id"].as_str().unwrap().to_string();
    let tricky = "o'brien\"; DROP TABLE groups; --\\";
    post(&s, "Users", &user(tricky, "Tricky"));
    assert_eq!(user_row(db, url, tricky).expect("tricky row")["user_name"], tricky);

    let alice_id = alice["id"].as_str().unwrap();
    let r = patch(
        &s,
        &format!("Users/{alice_id}"),
        json!([{"op": "Replace", "path": "displayName", "value": "Alice L."},
               {"op": "Replace", "path": "active", "value": "False"}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let row = user_row(db, url, "alice").unwrap();
    assert_eq!(row["display_name"], "Alice L.");
    assert!(!truthy(&row["active"]), "{row}");

    // Groups: members are the users' anchors; one added and one removed by a PATCH each.
    let bob = post(&s, "Users", &user("bob", "Bob"));
    let bob_anchor = user_row(db, url, "bob").unwrap()["id"].as_str().unwrap().to_string();
    let group = post(
        &s,
        "Groups",
        &json!({"schemas": [GROUP], "displayName": "Staff", "members": [{"value": alice_id}]}),
    );
    let group_row = query(url, "SELECT id, display_name FROM groups", &[]);
    assert_eq!(group_row.len(), 1, "{group_row:?}");
    let group_anchor = group_row[0]["id"].as_str().unwrap().to_string();
    assert_eq!(members(url, &group_anchor, db), BTreeSet::from([alice_anchor.clone()]));
    let gid = group["id"].as_str().unwrap();
    let r = patch(
        &s,
        &format!("Groups/{gid}"),
        json!([{"op": "add", "path": "members", "value": [{"value": bob["id"]}]}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(url, &group_anchor, db), BTreeSet::from([alice_anchor.clone(), bob_anchor.clone()]));
    let r = patch(
        &s,
        &format!("Groups/{gid}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{alice_id}\"]")}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(url, &group_anchor, db), BTreeSet::from([bob_anchor.clone()]));

    // A row the supervisor does not know holds the name: the unique constraint answers, and
    // the error names the column.
    execute(
        url,
        &format!("INSERT INTO users (id, user_name, active) VALUES ({}, {}, TRUE)", db.p(1), db.p(2)),
        &["outside-1", "taken"],
    );
    let r = s.scim("POST", "/scim/sql/Users", Some(&user("taken", "Taken").to_string()));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("user_name"), "the column is named: {}", r.body);

    // Deleting a user deletes its row; the group keeps its other member.
    assert_eq!(s.scim("DELETE", &format!("/scim/sql/Users/{alice_id}"), None).status, 204);
    assert!(user_row(db, url, "alice").is_none());
    assert_eq!(members(url, &group_anchor, db), BTreeSet::from([bob_anchor]));
    assert_eq!(s.scim("DELETE", &format!("/scim/sql/Groups/{gid}"), None).status, 204);
    assert!(query(url, "SELECT id FROM groups", &[]).is_empty());
    assert!(query(url, "SELECT owner FROM groups_members", &[]).is_empty());
    // Every table is still there: tricky, bob and the outside row.
    assert_eq!(query(url, "SELECT COUNT(*) AS n FROM users", &[])[0]["n"], 3);
}

/// Rows inserted, changed and soft-deleted in the database by another writer reach SCIM through
/// delta imports, which read only what moved since the last run.
fn delta_imports_follow_the_database(db: Db, url: &str) {
    let dir = TempDir::new("sql-delta");
    let s = start(db, url, &dir);
    for connector in ["sql-users", "sql-groups"] {
        s.wait_connector(connector, Duration::from_secs(20), |c| !c["last_import"].is_null());
    }
    post(&s, "Users", &user("carol", "Carol"));
    import(&s, "sql-users", "full");

    execute(
        url,
        &format!(
            "INSERT INTO users (id, user_name, display_name, active) VALUES ({}, {}, {}, TRUE)",
            db.p(1),
            db.p(2),
            db.p(3)
        ),
        &["dave-1", "dave", "Dave Outside"],
    );
    let report = import(&s, "sql-users", "delta");
    assert_eq!(report["import_type"], "delta", "{report}");
    assert_eq!(report["added"], 1, "{report}");
    let found = find_users(&s, "dave");
    assert_eq!(found["totalResults"], 1, "{found}");
    let dave_id = found["Resources"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(found["Resources"][0]["displayName"], "Dave Outside");

    execute(
        url,
        &format!("UPDATE users SET display_name = {}{} WHERE id = {}", db.p(1), db.touch(), db.p(2)),
        &["Dave Renamed", "dave-1"],
    );
    let report = import(&s, "sql-users", "delta");
    assert_eq!(report["updated"], 1, "{report}");
    let dave = s.scim("GET", &format!("/scim/sql/Users/{dave_id}"), None).json();
    assert_eq!(dave["displayName"], "Dave Renamed");

    execute(
        url,
        &format!("UPDATE users SET deleted = TRUE{} WHERE id = {}", db.touch(), db.p(1)),
        &["dave-1"],
    );
    let report = import(&s, "sql-users", "delta");
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(s.scim("GET", &format!("/scim/sql/Users/{dave_id}"), None).status, 404);
    // A full import leaves soft-deleted rows out too; carol is still there.
    let report = import(&s, "sql-users", "full");
    assert_eq!(report["deleted"], 0, "{report}");
    assert_eq!(find_users(&s, "carol")["totalResults"], 1);
    assert_eq!(find_users(&s, "dave")["totalResults"], 0);
}

#[test]
fn postgres_example_provisions_users_and_groups() {
    let pg = Postgres::start();
    provisions_users_and_groups(Db::Postgres, &pg.database());
}

#[test]
fn mariadb_example_provisions_users_and_groups() {
    let my = MariaDb::start();
    provisions_users_and_groups(Db::MariaDb, &my.database());
}

#[test]
fn postgres_delta_imports_follow_the_database() {
    let pg = Postgres::start();
    delta_imports_follow_the_database(Db::Postgres, &pg.database());
}

#[test]
fn mariadb_delta_imports_follow_the_database() {
    let my = MariaDb::start();
    delta_imports_follow_the_database(Db::MariaDb, &my.database());
}

/// The connector's pooled connections survive a database restart: writes during the outage get
/// 503 with Retry-After (never a half-written row), and the first write after it succeeds
/// without restarting the connector.
#[test]
fn postgres_restart_is_survived_without_restarting_the_connector() {
    let mut pg = Postgres::start();
    let url = pg.database();
    let dir = TempDir::new("sql-restart");
    let s = start(Db::Postgres, &url, &dir);
    post(&s, "Users", &user("before", "Before"));
    pg.stop();
    let r = s.scim("POST", "/scim/sql/Users", Some(&user("during", "During").to_string()));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    pg.restart();
    let created = e2e::create_retrying(s.scim, "sql", "after", Duration::from_secs(30));
    assert!(matches!(created, e2e::Created::Id(_)), "{created:?}");
    assert!(user_row(Db::Postgres, &url, "after").is_some());
    assert_eq!(s.connector("sql-users")["restarts"], 0, "the connector was not restarted");
}

/// A PostgreSQL restart in the middle of a burst of creates from eight clients that retry on 503
/// (as Entra does): every user ends up exactly once in SCIM and once in the table. A COMMIT cut
/// off by the restart has an unknown outcome, which the supervisor settles by a lookup instead of
/// repeating the insert.
#[test]
fn postgres_restart_in_a_burst_loses_nothing_and_duplicates_nothing() {
    let mut pg = Postgres::start();
    let url = pg.database();
    let dir = TempDir::new("sql-burst");
    let s = start(Db::Postgres, &url, &dir);
    let names: Vec<String> = (0..800).map(|i| format!("burst{i}")).collect();
    let scim = s.scim;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (done, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for chunk in names.chunks(100) {
            let (done, refused) = (&done, &refused);
            scope.spawn(move || {
                for name in chunk {
                    // As create_retrying, counting the 503s (the outage as clients see it).
                    loop {
                        match e2e::post_user(scim, "sql", name) {
                            Ok(r) if r.status == 201 || r.status == 409 => break,
                            Ok(r) if r.status == 503 => {
                                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => panic!("create {name}: unexpected {}: {}", r.status, r.body),
                            Err(_) => {}
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Stop the database once the burst is well under way, and start it again once clients
        // have been refused with 503 (the outage is seen), in the middle of the burst.
        e2e::wait_until(Duration::from_secs(30), "the burst to get going", || {
            done.load(Ordering::SeqCst) >= 20
        });
        pg.stop();
        e2e::wait_until(Duration::from_secs(30), "a 503 during the outage", || {
            refused.load(Ordering::SeqCst) >= 1
        });
        pg.restart();
    });
    let listed = s.scim("GET", "/scim/sql/Users?count=0", None).json();
    assert_eq!(listed["totalResults"], names.len(), "{listed}");
    let present: Vec<String> = query(&url, "SELECT user_name FROM users", &[])
        .iter()
        .map(|r| r["user_name"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = names.iter().filter(|n| !present.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged creates without a row: {missing:?}; supervisor log:\n{}",
        s.log()
    );
    let duplicates = query(&url, "SELECT user_name FROM users GROUP BY user_name HAVING COUNT(*) > 1", &[]);
    assert!(duplicates.is_empty(), "duplicated rows: {duplicates:?}");
    assert_eq!(query(&url, "SELECT COUNT(*) AS n FROM users", &[])[0]["n"], names.len());
    for name in &names {
        assert_eq!(find_users(&s, name)["totalResults"], 1, "{name}");
    }
}

/// An application's own table, with a database-assigned integer key, written through the
/// admin's SQL (an INSERT that returns the key, a DELETE) and a stored procedure (updates), and
/// read through the admin's paged SELECT.
fn statements_and_procedures(db: Db, url: &str) {
    let (setup, add, read, delete): (&[&str], &str, &str, &str) = match db {
        Db::Postgres => (
            &[
                "CREATE TABLE accounts (account_id SERIAL PRIMARY KEY, login TEXT UNIQUE NOT NULL, \
                 full_name TEXT, enabled BOOLEAN NOT NULL DEFAULT TRUE, audit TEXT)",
                "CREATE PROCEDURE account_update(p_id TEXT, p_full_name TEXT, p_enabled BOOLEAN) \
                 LANGUAGE sql AS $$ UPDATE accounts SET full_name = p_full_name, enabled = p_enabled, \
                 audit = 'updated by procedure' WHERE account_id = CAST(p_id AS INTEGER) $$",
            ],
            "INSERT INTO accounts (login, full_name, enabled, audit) VALUES (:login, :full_name, :enabled, 'added by statement') RETURNING account_id",
            "SELECT CAST(account_id AS TEXT) AS account_id, login, full_name, enabled, audit FROM accounts \
             WHERE CAST(:after AS TEXT) IS NULL OR account_id > CAST(:after AS INTEGER) ORDER BY account_id LIMIT :page_size",
            "DELETE FROM accounts WHERE account_id = CAST(:anchor AS INTEGER)",
        ),
        Db::MariaDb => (
            &[
                "CREATE TABLE accounts (account_id INT AUTO_INCREMENT PRIMARY KEY, login VARCHAR(200) UNIQUE NOT NULL, \
                 full_name TEXT, enabled BOOLEAN NOT NULL DEFAULT TRUE, audit TEXT)",
                "CREATE PROCEDURE account_update(IN p_id VARCHAR(20), IN p_full_name TEXT, IN p_enabled BOOLEAN) \
                 UPDATE accounts SET full_name = p_full_name, enabled = p_enabled, \
                 audit = 'updated by procedure' WHERE account_id = p_id",
            ],
            "INSERT INTO accounts (login, full_name, enabled, audit) VALUES (:login, :full_name, :enabled, 'added by statement') RETURNING account_id",
            "SELECT CAST(account_id AS CHAR) AS account_id, login, full_name, CAST(enabled AS SIGNED) AS enabled, audit \
             FROM accounts WHERE :after IS NULL OR account_id > :after ORDER BY account_id LIMIT :page_size",
            "DELETE FROM accounts WHERE account_id = :anchor",
        ),
    };
    for statement in setup {
        execute(url, statement, &[]);
    }
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
plain_http = true

[apps.legacy]
users = "legacy-users"
token_env = "SCIM_TOKEN"

[connectors.legacy-users]
executable = "connector-sql"
object_type = "user"
partition = "default"

[connectors.legacy-users.parameters]
connection_string = {{ env = "DATABASE_URL" }}
table = "accounts"
anchor_column = "account_id"
add_statement = {add:?}
update_procedure = "account_update"
update_procedure_parameters = "anchor, full_name, enabled"
delete_statement = {delete:?}
read_statement = {read:?}

[connectors.legacy-users.attributes]
login = "userName"
full_name = "displayName"
enabled = "active"
"#
    );
    let dir = TempDir::new("sql-statements");
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[("DATABASE_URL", url)]);
    s.wait_ready(Duration::from_secs(30));
    let accounts = |login: &str| {
        let sql = format!(
            "SELECT CAST(account_id AS {}) AS account_id, full_name, CASE WHEN enabled THEN 1 ELSE 0 END AS enabled, \
             audit FROM accounts WHERE login = {}",
            if db == Db::Postgres { "TEXT" } else { "CHAR" },
            db.p(1)
        );
        query(url, &sql, &[login]).into_iter().next()
    };

    let r = s.scim("POST", "/scim/legacy/Users", Some(&user("erin", "Erin").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let erin_id = r.json()["id"].as_str().unwrap().to_string();
    let row = accounts("erin").expect("erin's row");
    assert_eq!(row["audit"], "added by statement", "{row}");
    assert_eq!(row["full_name"], "Erin");
    let key = row["account_id"].as_str().unwrap().to_string();
    assert!(key.parse::<i64>().is_ok(), "the database assigned the key: {row}");

    let r = s.scim(
        "PATCH",
        &format!("/scim/legacy/Users/{erin_id}"),
        Some(&json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Erin B."}]}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let row = accounts("erin").unwrap();
    assert_eq!(row["audit"], "updated by procedure", "{row}");
    assert_eq!(row["full_name"], "Erin B.");
    assert_eq!(row["enabled"], 1, "what the change did not name kept its value: {row}");

    // Read through the admin's SELECT: a row added by the application comes in.
    execute(
        url,
        &format!("INSERT INTO accounts (login, full_name) VALUES ({}, {})", db.p(1), db.p(2)),
        &["frank", "Frank"],
    );
    let report = import(&s, "legacy-users", "full");
    assert_eq!((report["added"].as_u64(), report["errors"].as_u64()), (Some(1), Some(0)), "{report}");
    let r = s.scim("GET", "/scim/legacy/Users?filter=userName+eq+%22frank%22", None).json();
    assert_eq!(r["Resources"][0]["displayName"], "Frank", "{r}");

    assert_eq!(s.scim("DELETE", &format!("/scim/legacy/Users/{erin_id}"), None).status, 204);
    assert!(accounts("erin").is_none());
    assert!(accounts("frank").is_some());
}

#[test]
fn postgres_statements_and_procedures() {
    let pg = Postgres::start();
    statements_and_procedures(Db::Postgres, &pg.database());
}

#[test]
fn mariadb_statements_and_procedures() {
    let my = MariaDb::start();
    statements_and_procedures(Db::MariaDb, &my.database());
}

/// The ODBC path (connector-sql built with the `odbc` feature, as scripts/test-all.sh builds
/// it), through Debian's psqlODBC driver to a throwaway PostgreSQL: the catalog from SQLColumns,
/// generated statements with `?` parameters, a unique violation, paged full imports.
#[test]
fn odbc_through_the_postgresql_driver() {
    let pg = Postgres::start();
    let url = pg.database();
    execute(
        &url,
        "CREATE TABLE people (person_id TEXT PRIMARY KEY, login TEXT UNIQUE NOT NULL, full_name TEXT, \
         active BOOLEAN, logins INTEGER)",
        &[],
    );
    let database = url.rsplit('/').next().unwrap();
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap();
    let odbc = format!(
        "odbc:Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={port};Database={database};Uid=postgres;BoolsAsChar=0;"
    );
    let config = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
plain_http = true

[apps.odbc]
users = "odbc-users"
token_env = "SCIM_TOKEN"

[connectors.odbc-users]
executable = "connector-sql"
object_type = "user"
partition = "default"

[connectors.odbc-users.parameters]
connection_string = { env = "ODBC_CONNECTION" }
table = "people"
anchor_column = "person_id"

[connectors.odbc-users.attributes]
login = "userName"
full_name = "displayName"
active = "active"
"#;
    let dir = TempDir::new("sql-odbc");
    let s = Supervisor::spawn_with_env(config, dir.path(), &[("ODBC_CONNECTION", &odbc)]);
    s.wait_ready(Duration::from_secs(30));
    let row = |login: &str| {
        query(
            &url,
            "SELECT person_id, full_name, CASE WHEN active THEN 1 ELSE 0 END AS active FROM people WHERE login = $1",
            &[login],
        )
        .into_iter()
        .next()
    };

    let injection = "Robert'); DROP TABLE people; --";
    let r = s.scim("POST", "/scim/odbc/Users", Some(&user("bobby", injection).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let bobby = row("bobby").expect("bobby's row");
    assert_eq!(
        (bobby["full_name"].as_str(), bobby["active"].as_i64()),
        (Some(injection), Some(1)),
        "{bobby}"
    );

    let r = s.scim(
        "PATCH",
        &format!("/scim/odbc/Users/{id}"),
        Some(
            &json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]})
                .to_string(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(row("bobby").unwrap()["active"], 0);

    execute(
        &url,
        "INSERT INTO people (person_id, login, full_name, active) VALUES ('p-2', 'taken', 'Taken', TRUE)",
        &[],
    );
    let r = s.scim("POST", "/scim/odbc/Users", Some(&user("taken", "Again").to_string()));
    assert_eq!(r.status, 409, "{}", r.body);

    let report = import(&s, "odbc-users", "full");
    assert_eq!((report["added"].as_u64(), report["errors"].as_u64()), (Some(1), Some(0)), "{report}");
    let found = s.scim("GET", "/scim/odbc/Users?filter=userName+eq+%22taken%22", None).json();
    assert_eq!(found["Resources"][0]["displayName"], "Taken", "{found}");
    assert_eq!(found["Resources"][0]["active"], true, "{found}");

    assert_eq!(s.scim("DELETE", &format!("/scim/odbc/Users/{id}"), None).status, 204);
    assert!(row("bobby").is_none());
}

/// The example with the users' deltas read from a change table that the connector's triggers
/// fill (instead of the watermark column): another writer's insert, update and hard delete all
/// reach SCIM, without that writer doing anything special.
fn with_change_triggers(example: &str) -> String {
    example.replace(
        "watermark_column = \"updated_at\"\nsoft_delete_column = \"deleted\"",
        "change_table = \"users_changes\"\ninstall_change_triggers = true",
    )
}

fn change_table_deltas(s: &Supervisor, exec: &dyn Fn(&str, &[&str]), p: &dyn Fn(usize) -> String) {
    for connector in ["sql-users", "sql-groups"] {
        s.wait_connector(connector, Duration::from_secs(20), |c| !c["last_import"].is_null());
    }
    let find = |name: &str| {
        let r = s.scim("GET", &format!("/scim/sql/Users?filter=userName+eq+%22{name}%22"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    exec(
        &format!(
            "INSERT INTO users (id, user_name, display_name, active) VALUES ({}, {}, {}, TRUE)",
            p(1),
            p(2),
            p(3)
        ),
        &["gina-1", "gina", "Gina Outside"],
    );
    let report = import(s, "sql-users", "delta");
    assert_eq!(
        (report["import_type"].as_str(), report["added"].as_u64()),
        (Some("delta"), Some(1)),
        "{report}"
    );
    let id = find("gina")["Resources"][0]["id"].as_str().expect("gina imported").to_string();

    exec(
        &format!("UPDATE users SET display_name = {} WHERE id = {}", p(1), p(2)),
        &["Gina Renamed", "gina-1"],
    );
    let report = import(s, "sql-users", "delta");
    assert_eq!(report["updated"], 1, "{report}");
    assert_eq!(s.scim("GET", &format!("/scim/sql/Users/{id}"), None).json()["displayName"], "Gina Renamed");

    exec(&format!("DELETE FROM users WHERE id = {}", p(1)), &["gina-1"]);
    let report = import(s, "sql-users", "delta");
    assert_eq!(report["deleted"], 1, "a hard delete is seen: {report}");
    assert_eq!(s.scim("GET", &format!("/scim/sql/Users/{id}"), None).status, 404);
}

#[test]
fn postgres_change_table_triggers() {
    let pg = Postgres::start();
    let url = pg.database();
    let dir = TempDir::new("sql-changes");
    let s = Supervisor::spawn_with_env(
        &with_change_triggers(&Db::Postgres.example()),
        dir.path(),
        &[("DATABASE_URL", &url)],
    );
    s.wait_ready(Duration::from_secs(30));
    change_table_deltas(&s, &|sql, binds| execute(&url, sql, binds), &|n| Db::Postgres.p(n));
}

#[test]
fn mariadb_change_table_triggers() {
    let my = MariaDb::start();
    let url = my.database();
    let dir = TempDir::new("sql-changes");
    let s = Supervisor::spawn_with_env(
        &with_change_triggers(&Db::MariaDb.example()),
        dir.path(),
        &[("DATABASE_URL", &url)],
    );
    s.wait_ready(Duration::from_secs(30));
    change_table_deltas(&s, &|sql, binds| execute(&url, sql, binds), &|n| Db::MariaDb.p(n));
}

#[test]
fn sqlite_change_table_triggers() {
    let dir = TempDir::new("sql-changes-sqlite");
    let db = dir.path().join("target.db");
    let url = format!("sqlite://{}", db.display());
    let s = Supervisor::spawn_with_env(
        &with_change_triggers(&Db::Postgres.example()),
        dir.path(),
        &[("DATABASE_URL", &url)],
    );
    s.wait_ready(Duration::from_secs(30));
    change_table_deltas(&s, &|sql, binds| execute(&url, sql, binds), &|n| format!("?{n}"));
}

/// SQLite, through the admin's statements for every operation (SQLite has no stored
/// procedures: a procedure is refused with a message saying so).
#[test]
fn sqlite_statements_for_every_operation() {
    let dir = TempDir::new("sql-sqlite-statements");
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    execute(
        &format!("{url}?mode=rwc"),
        "CREATE TABLE people (pid INTEGER PRIMARY KEY, login TEXT UNIQUE NOT NULL, full_name TEXT, note TEXT)",
        &[],
    );
    let config = |extra: &str| {
        format!(
            r#"
[server]
plain_http = true

[apps.app]
users = "app-users"
token_env = "SCIM_TOKEN"

[connectors.app-users]
executable = "connector-sql"
object_type = "user"
partition = "default"

[connectors.app-users.parameters]
connection_string = "{url}"
table = "people"
anchor_column = "pid"
{extra}

[connectors.app-users.attributes]
login = "userName"
full_name = "displayName"
"#
        )
    };
    let statements = r#"add_statement = "INSERT INTO people (login, full_name, note) VALUES (:login, :full_name, 'added') RETURNING pid"
update_statement = "UPDATE people SET full_name = :full_name, note = 'updated' WHERE pid = :anchor"
delete_statement = "DELETE FROM people WHERE pid = :anchor"
read_statement = "SELECT pid, login, full_name FROM people WHERE :after IS NULL OR pid > CAST(:after AS INTEGER) ORDER BY pid LIMIT :page_size""#;
    let s = Supervisor::spawn_with_env(&config(statements), dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30));
    let r = s.scim("POST", "/scim/app/Users", Some(&user("gus", "Gus").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let row = || {
        query(&url, "SELECT pid, full_name, note FROM people WHERE login = ?", &["gus"]).into_iter().next()
    };
    assert_eq!(row().unwrap()["note"], "added");
    let r = s.scim(
        "PATCH",
        &format!("/scim/app/Users/{id}"),
        Some(&json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Gus G."}]}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (row().unwrap()["full_name"].as_str(), row().unwrap()["note"].as_str()),
        (Some("Gus G."), Some("updated"))
    );
    execute(&url, "INSERT INTO people (login, full_name) VALUES ('hal', 'Hal')", &[]);
    assert_eq!(import(&s, "app-users", "full")["added"], 1);
    assert_eq!(s.scim("DELETE", &format!("/scim/app/Users/{id}"), None).status, 204);
    assert!(row().is_none());
    drop(s);

    // A stored procedure on SQLite: refused, saying why.
    let s = Supervisor::spawn_with_env(&config("update_procedure = \"people_update\""), dir.path(), &[]);
    s.wait_admin_up();
    let c = s.wait_connector("app-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("SQLite has no stored procedures"), "{c}");
}
