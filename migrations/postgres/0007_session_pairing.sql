-- Pairing details of a session waiting to be paired: when its QR code expires, and the
-- pairing code shown instead of a QR when the operator pairs by phone number.

ALTER TABLE bot_sessions ADD COLUMN qr_expires_at TIMESTAMPTZ;
ALTER TABLE bot_sessions ADD COLUMN pairing_code TEXT;
