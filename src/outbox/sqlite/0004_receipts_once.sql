-- notifyd queue schema, version 4: a receipt is stored once.

-- Providers retry callbacks and anyone holding a signed request can replay it: the same
-- (channel, provider id, provider status) is one receipt. Keep the first of any stored twice.
DELETE FROM receipts WHERE id NOT IN
    (SELECT min(id) FROM receipts GROUP BY channel, provider_id, provider_status);
CREATE UNIQUE INDEX receipts_once ON receipts (channel, provider_id, provider_status);
