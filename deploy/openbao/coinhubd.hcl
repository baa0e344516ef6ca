# OpenBao/Vault policy of coinhubd's token: key A's transit key `coinhub-a`, nothing else.
# `bao policy write coinhubd deploy/openbao/coinhubd.hcl`
# `bao token create -policy=coinhubd -no-default-policy -orphan -period=768h`
#
# coinhubd never sees key B: this token is refused (403) on transit/*/coinhub-b.

# `coinhubd init`: a fresh data key for envelope encryption of key A's seed.
path "transit/datakey/plaintext/coinhub-a" {
  capabilities = ["update"]
}

path "transit/encrypt/coinhub-a" {
  capabilities = ["update"]
}

# Every signature: unwrap key A's data key (audited).
path "transit/decrypt/coinhub-a" {
  capabilities = ["update"]
}

# Read the key's metadata (type, versions), never its material.
path "transit/keys/coinhub-a" {
  capabilities = ["read"]
}
