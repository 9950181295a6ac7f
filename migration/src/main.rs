//! `migration up|down [N]|status`: the migrations as a command line tool.
//! The database comes from `DATABASE_URL`. There is deliberately no `fresh` or
//! `reset`: those drop every table, and the Kuma nodes' tables live in the same
//! database.

use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::Database;
use std::process::ExitCode;

const USAGE: &str = "usage: migration up | down [steps] | status   (database from DATABASE_URL)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set; {USAGE}");
        return ExitCode::from(2);
    };
    let command = args.first().map(String::as_str);
    let steps = match args.get(1).map(|s| s.parse::<u32>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            eprintln!("steps must be a whole number; {USAGE}");
            return ExitCode::from(2);
        }
    };
    let db = match Database::connect(&url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("cannot connect to the database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Some("up") => Migrator::up(&db, steps).await,
        Some("down") => Migrator::down(&db, Some(steps.unwrap_or(1))).await,
        Some("status") => Migrator::status(&db).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migration failed: {e}");
            ExitCode::FAILURE
        }
    }
}
