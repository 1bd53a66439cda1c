//! `migrate`: applies (or, with `--revert-all`, reverts) the embedded migrations on
//! `DATABASE_URL`. Used by `cargo xtask db`, the Helm hook Job and docker-compose.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let revert = match args.as_slice() {
        [] => false,
        [flag] if flag == "--revert-all" => true,
        _ => {
            eprintln!("usage: migrate [--revert-all]   (reads DATABASE_URL)");
            return ExitCode::from(64);
        }
    };
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("migrate: DATABASE_URL is not set");
        return ExitCode::from(64);
    };
    let result = if revert {
        cls_storage::migrate::revert_all(&url).await
    } else {
        cls_storage::migrate::run(&url).await
    };
    match result {
        Ok(versions) => {
            let verb = if revert { "reverted" } else { "applied" };
            eprintln!(
                "migrate: {verb} {} migration(s) {versions:?}",
                versions.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
