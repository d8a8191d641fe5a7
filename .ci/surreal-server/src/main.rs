//! The SurrealDB 3.3.5 server (`surreal start …`), built from the published server library for the remote-database test.

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
