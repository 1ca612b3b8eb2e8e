//! Starts a throwaway PostgreSQL server (the tests' own fixture: a temporary data directory, a
//! free loopback port, fsync off), creates the databases named as arguments, prints the URL of
//! its `postgres` database on one line, and stops it (removing everything) when its standard
//! input closes. scripts/test-all.sh runs the SCIM suites against a PostgreSQL connector space
//! with it.
//!
//!   throwaway-postgres [DATABASE...]

use std::io::Read;

fn main() {
    let server = e2e::databases::Postgres::start();
    for name in std::env::args().skip(1) {
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "not a database name: {name}");
        e2e::databases::execute(&server.url("postgres"), &format!("CREATE DATABASE {name}"), &[]);
    }
    println!("{}", server.url("postgres"));
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(server);
}
