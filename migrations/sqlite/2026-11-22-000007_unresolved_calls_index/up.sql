-- The reconciler's claim of unanswered approval calls (src/db/claims.rs) also takes calls
-- answered with a timeout or an unreadable reply, so `gateway_calls_unanswered` (completed_at
-- IS NULL) never matched its condition and each pass read every call ever made (SQLite's plan
-- said SCAN). This index's condition is the claim's own: it holds the calls still to resolve.
DROP INDEX gateway_calls_unanswered;
CREATE INDEX gateway_calls_unresolved ON gateway_calls (requested_at)
    WHERE resolved_at IS NULL AND (completed_at IS NULL OR outcome IN ('timeout', 'transport_error', 'malformed'));
