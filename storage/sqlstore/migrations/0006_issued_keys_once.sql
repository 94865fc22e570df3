-- Schema version 6: a certificate's private key lives in one place once it
-- is issued, the inventory. Workflows that name their certificate drop the
-- copy they kept from before (new writes never store one).

UPDATE workflows SET private_key = NULL WHERE certificate_id <> '' AND private_key IS NOT NULL;
