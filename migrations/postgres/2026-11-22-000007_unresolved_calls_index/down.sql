DROP INDEX gateway_calls_unresolved;
CREATE INDEX gateway_calls_unanswered ON gateway_calls (requested_at)
    WHERE completed_at IS NULL AND resolved_at IS NULL;
