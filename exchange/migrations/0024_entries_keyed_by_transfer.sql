-- `entries`' primary key becomes (transfer_id, id): the index every lookup of entries by their
-- transfer already used. The index on `id` alone goes.
--
-- Why: a trade settlement writes one entry per account its batch changed (400–500 at 200
-- members in the settlement benchmark), and each entry paid for three index entries: `id`
-- (the primary key, which no statement looks entries up by), (transfer_id, id) (0010: the
-- balance checks, the order check of a transfer's entries, the application of deferred
-- entries) and account_id (an account's statement, the audit). Now two.
--
-- An entry's id stays unique: it is `GENERATED ALWAYS AS IDENTITY`, so only a statement that
-- overrides the identity (`OVERRIDING SYSTEM VALUE`) could give one twice, and within a
-- transfer the key still refuses it. Nothing refers to an entry by id alone.
CREATE UNIQUE INDEX entries_transfer_id_id_key ON entries (transfer_id, id);
ALTER TABLE entries DROP CONSTRAINT entries_pkey;
ALTER TABLE entries ADD CONSTRAINT entries_pkey PRIMARY KEY USING INDEX entries_transfer_id_id_key;
DROP INDEX entries_transfer_id_id;
