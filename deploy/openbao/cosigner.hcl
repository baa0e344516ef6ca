# OpenBao/Vault policy of the cosigner's token: key B's transit key `coinhub-b`, nothing else.
# `bao policy write coinhub-cosigner deploy/openbao/cosigner.hcl`
# `bao token create -policy=coinhub-cosigner -no-default-policy -orphan -period=768h`
#
# The cosigner never sees key A: this token is refused (403) on transit/*/coinhub-a.

# `coinhubd cosigner init`: a fresh data key for envelope encryption of key B's seed.
path "transit/datakey/plaintext/coinhub-b" {
  capabilities = ["update"]
}

path "transit/encrypt/coinhub-b" {
  capabilities = ["update"]
}

# Every signature: unwrap key B's data key (audited).
path "transit/decrypt/coinhub-b" {
  capabilities = ["update"]
}

# Read the key's metadata (type, versions), never its material.
path "transit/keys/coinhub-b" {
  capabilities = ["read"]
}
