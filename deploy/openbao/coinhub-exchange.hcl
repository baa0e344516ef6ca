# OpenBao/Vault policy of coinhub-exchange's token: the transit key `coinhub-exchange` that
# seals the member API keys' secrets (exchange/src/api/secrets.rs), nothing else.
# `bao write -f transit/keys/coinhub-exchange`
# `bao policy write coinhub-exchange deploy/openbao/coinhub-exchange.hcl`
# `bao token create -policy=coinhub-exchange -no-default-policy -orphan -period=768h`
#
# The exchange never sees the custody keys: this token is refused (403) on coinhub-a/-b.

# `api-key create`, and sealing secrets stored before migration 0011: a fresh data key per
# secret.
path "transit/datakey/plaintext/coinhub-exchange" {
  capabilities = ["update"]
}

# The first signed request of each key after a start: unwrap its data key (audited).
path "transit/decrypt/coinhub-exchange" {
  capabilities = ["update"]
}
