-- The dispatcher sends a contact's outbound messages in order: an entry is due only when
-- no earlier entry of the same contact is unfinished. This index holds exactly the
-- unfinished outbound entries, so that check reads a handful of rows however long the
-- contact's history grows, and stays cheap with a large backlog.
CREATE INDEX messages_unfinished_outbound ON messages (bot_id, contact, seq)
    WHERE direction = 'out'
      AND (state IN ('pending', 'processing') OR (state = 'failed' AND next_attempt_ms IS NOT NULL));
