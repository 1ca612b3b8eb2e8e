//! Starts a throwaway PostgreSQL server (the tests' own fixture: a temporary data directory, a
//! free loopback port, fsync off), prints the URL of its `postgres` database on one line, and
//! stops it (removing everything) when its standard input closes. scripts/test-all.sh runs the
//! SCIM protocol suites against a PostgreSQL connector space with it (`E2E_STORE_URL`).

use std::io::Read;

fn main() {
    let server = e2e::databases::Postgres::start();
    println!("{}", server.url("postgres"));
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(server);
}
