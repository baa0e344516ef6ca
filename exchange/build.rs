//! Rebuild when a migration is added: `sqlx::migrate!` embeds the folder at compile time,
//! and cargo does not watch a folder for new files on its own.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
