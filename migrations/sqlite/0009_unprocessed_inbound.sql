-- A conversation worker reads its contact's inbound messages not handled yet. This index
-- holds exactly those, so the read touches a handful of rows however long the contact's
-- history grows (through the contact's whole history it cost milliseconds a message
-- after a few hundred messages, and those reads starved the connection pool).
CREATE INDEX messages_unprocessed_inbound ON messages (bot_id, contact, seq)
    WHERE direction = 'in' AND state = 'received';
