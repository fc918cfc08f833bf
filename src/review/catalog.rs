//! What each review scenario proves: the KICC rule (quoted from the spec file, named), what the
//! runner does, and what must happen. The code that does it is in `scenarios.rs`.

use serde::Serialize;

/// One scenario as a reviewer reads it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioInfo {
    pub id: &'static str,
    pub title: &'static str,
    /// The spec file the rule is quoted from (KICC's pages, copied into `docs/kicc-spec/`).
    pub spec: &'static str,
    /// The rule, word for word.
    pub rule: &'static str,
    pub done: &'static str,
    pub expected: &'static str,
}

const S01: &str = "01-create-transaction-wechatpay.txt";
const S02: &str = "02-payment-approval-v2.txt";
const S03: &str = "03-kiccpay-simple-payment-approval.txt";
const S04: &str = "04-payment-approval-webhook.txt";
const S05: &str = "05-cancellation-webhook.txt";
const S06: &str = "06-companion-apis.md";

/// Every scenario, in the order they run. The last two read what all the others did.
pub const SCENARIOS: &[ScenarioInfo] = &[
    ScenarioInfo {
        id: "native_qr",
        title: "Desktop WeChat Pay shows a QR code of the code URL",
        spec: S01,
        rule: "QR Payment (native): The returned paymentPageUrl is a code URL. You must generate a QR code image using this URL for the user to scan.",
        done: "A desktop WeChat order; the runner reads the QR image back like a phone camera, opens the URL it holds and pays there.",
        expected: "The QR decodes to exactly the paymentPageUrl KICC returned; that URL is the payment page; the order ends paid.",
    },
    ScenarioInfo {
        id: "mweb_redirect",
        title: "Phone WeChat Pay redirects the browser",
        spec: S01,
        rule: "Web Payment (mweb): The returned paymentPageUrl is a redirect URL. You must redirect the user's mobile browser to this URL.",
        done: "A phone browser (iPhone user agent) adds a product to the cart and submits the checkout form.",
        expected: "The answer is a 303 to KICC's mweb payment page for an mweb trade; paying there ends the order paid.",
    },
    ScenarioInfo {
        id: "usd_minor_units",
        title: "USD is sent as cents",
        spec: S01,
        rule: "For USD: Amount * 100 (e.g., $12.03 -> 1203)",
        done: "A USD order of 2 mugs and a sticker pack, priced by the catalog's API.",
        expected: "The create request carries totalAmount = the catalog's dollars × 100 and currency USD; KICC holds the same amount; the order ends paid for it.",
    },
    ScenarioInfo {
        id: "unique_order_numbers",
        title: "Order numbers are unique",
        spec: S01,
        rule: "shopOrderNo ... Merchant Order No. Must be Unique.",
        done: "20 orders created at the same moment.",
        expected: "20 different shopOrderNo values, each at most 40 bytes (20 here, for KICC Pay's mercTrxNo); KICC registered 20 trades.",
    },
    ScenarioInfo {
        id: "approval_paid",
        title: "Approval with the authorizationId; the reply verified",
        spec: S02,
        rule: "This API requests payment approval using the Authorization ID (authorizationId) received from the payment window.",
        done: "A WeChat order paid on KICC's page; the browser comes back to the returnUrl.",
        expected: "One approval call (v2) with the authorizationId; amount equal and msgAuthValue valid; the order paid; KICC's trade approved (TS01); the shopper sees the paid page.",
    },
    ScenarioInfo {
        id: "timeout_30s",
        title: "Gateway calls wait 30 seconds",
        spec: S02,
        rule: "Since final payment approval takes time, you must set the timeout to 30 seconds.",
        done: "Reads the configuration an app gets with no overrides, and the one the review's main instance runs with.",
        expected: "Both wait 30 s for every gateway call (KICC_TIMEOUT_SECS). The review's quiet instance uses 1 s only to provoke timeouts.",
    },
    ScenarioInfo {
        id: "approval_amount_mismatch",
        title: "Approval amount differs → cancel",
        spec: S02,
        rule: "Amount Mismatch: If the payment amount in the approval result differs from your merchant's requested amount, you MUST cancel the transaction immediately.",
        done: "KICC approves one won more than ordered. Notifications are refused here, so only the approval path can act.",
        expected: "The order is cancelled, not paid; KICC's trade is fully cancelled (TS02); the timeline names both amounts.",
    },
    ScenarioInfo {
        id: "approval_bad_mac",
        title: "msgAuthValue does not verify → cancel",
        spec: S06,
        rule: "approval response (file 02) | `pgCno|amount|transactionDate` — the merchant verifies it | ... Compare with a constant-time comparison.",
        done: "KICC's approval reply carries a msgAuthValue that does not verify. Notifications are refused here.",
        expected: "The reply is not trusted: the order is cancelled and KICC's trade fully cancelled (TS02).",
    },
    ScenarioInfo {
        id: "approval_db_failure",
        title: "Database write fails after approval → cancel",
        spec: S02,
        rule: "DB Update Failure: If you fail to update your internal database after receiving a successful approval result, you MUST cancel the transaction.",
        done: "The database itself refuses to mark any order paid (a trigger); the shopper pays. Notifications are refused here.",
        expected: "The order is cancelled; KICC's trade fully cancelled (TS02); the timeline quotes the database's error.",
    },
    ScenarioInfo {
        id: "approval_timeout",
        title: "Approval times out → status check → cancel",
        spec: S02,
        rule: "Timeout & Network Errors: If you do not receive a response due to a timeout or network error, you MUST verify the status using the Transaction Status Check API and cancel the transaction if a valid PG Transaction ID exists.",
        done: "KICC approves but answers 2.5 s later, past this instance's 1 s timeout. Notifications are refused here.",
        expected: "The approval call ends timeout; retrieveTransaction finds the pgCno; it is cancelled; the order is cancelled; KICC's trade TS02.",
    },
    ScenarioInfo {
        id: "kiccpay_paid",
        title: "KICC Pay: tokenKey encrypted, request signed, approved",
        spec: S03,
        rule: "tokenKey ... Token data received after authentication. Must encrypt the authorizationId (received in the auth response) using AES256.",
        done: "A KICC Pay order; the shopper pays in KICC's window and comes back to the returnUrl.",
        expected: "KICC accepts the AES-256 tokenKey and the X-KICC-Authorization signature; the order is paid; KICC's trade approved (TS01); no tokenKey or authorizationId is stored in clear.",
    },
    ScenarioInfo {
        id: "kiccpay_timeout_net_cancel",
        title: "KICC Pay approval times out → net-cancel",
        spec: S03,
        rule: "Network Error/Timeout: If you do not receive a response due to a Read Timeout or Network Error, the transaction might have actually been approved. In such cases, you MUST call the Net-Cancel API to ensure data consistency.",
        done: "KICC Pay approves but answers 2.5 s later, past this instance's 1 s timeout.",
        expected: "A net-cancel (reqRtran) with the approval's own data follows; the order is cancelled; KICC's trade is voided (TS12).",
    },
    ScenarioInfo {
        id: "kiccpay_unparseable_net_cancel",
        title: "KICC Pay reply unreadable → net-cancel",
        spec: S06,
        rule: "Net-cancel `POST /smpy/kiccpay/reqRtran`: mandatory after a read timeout, connection error or unparseable approval response; resend the exact same data as the approval.",
        done: "KICC Pay approves but its reply is an HTML page instead of JSON.",
        expected: "The reply is recorded as malformed; a net-cancel follows; the order is cancelled; KICC's trade voided (TS12).",
    },
    ScenarioInfo {
        id: "kiccpay_amount_mismatch",
        title: "KICC Pay approved amount differs → cancel",
        spec: S03,
        rule: "Amount Mismatch: If the approved amount in the response differs from the merchant's requested amount, you MUST initiate a cancellation.",
        done: "KICC Pay approves one won more than ordered (its reply's trxAmt says so).",
        expected: "The order is cancelled with reqCancel; KICC's trade has nothing left (remaining 0).",
    },
    ScenarioInfo {
        id: "kiccpay_db_failure",
        title: "KICC Pay: database write fails → cancel",
        spec: S03,
        rule: "Internal Process Failure: If your internal database fails to process the result after a successful approval, you MUST cancel the transaction.",
        done: "The database refuses to mark any order paid; the shopper pays with KICC Pay.",
        expected: "The order is cancelled with reqCancel; KICC's trade has nothing left (remaining 0).",
    },
    ScenarioInfo {
        id: "webhook_amount_mismatch",
        title: "Notification amount differs → cancel",
        spec: S04,
        rule: "Integrity Check: If the amount in the notification differs from your internal order amount, you MUST cancel the transaction immediately.",
        done: "A WeChat order is paid; KICC's approval notification then says one won more.",
        expected: "The notification is acked and stored; the order is cancelled; KICC's trade fully cancelled (TS02).",
    },
    ScenarioInfo {
        id: "webhook_db_failure_cancel",
        title: "Notification cannot be written → cancel",
        spec: S04,
        rule: "DB Failure: If you fail to update your database after receiving the notification, you MUST cancel the transaction.",
        done: "The shopper pays and never comes back; KICC notifies; the database refuses the notification's write on the order.",
        expected: "The ack is not 0000 (5001, so KICC resends); the payment is cancelled: the order ends cancelled, KICC's trade TS02.",
    },
    ScenarioInfo {
        id: "webhook_db_failure_resend",
        title: "Notification not stored → 5001 → applied on KICC's resend",
        spec: S04,
        rule: "Retry Policy: For WeChat Pay, if a success response is not received, the notification is resent up to 15 times.",
        done: "The database refuses to store any delivery while KICC's first notification arrives; then it recovers.",
        expected: "KICC's first attempt gets resCd 5001; a resend gets 0000; exactly one delivery is applied; the order ends paid.",
    },
    ScenarioInfo {
        id: "webhook_duplicates",
        title: "15 identical notifications → one effect",
        spec: S06,
        rule: "Ack `{resCd:\"0000\", resMsg, pgCno}` to accept; any other resCd (e.g. `5001`) asks for a resend. Deduplicate on `pgCno` (approval) and `cancelPgCno` (cancellation).",
        done: "KICC sends the approval notification as 15 concurrent copies while the shopper returns.",
        expected: "15 deliveries stored, every one acked 0000 echoing the pgCno; one applied; one `paid` transition.",
    },
    ScenarioInfo {
        id: "webhook_before_return",
        title: "Notification before the returnUrl",
        spec: S06,
        rule: "The returnUrl is the shopper's browser, not KICC: never trust it for amounts or status — the approval response, the webhook and the status check are the sources of truth.",
        done: "KICC notifies the approval before the browser reaches the returnUrl.",
        expected: "The notification is stored and applied; the order ends paid once, with one `paid` transition and at most one approval call; KICC's trade approved once (TS01).",
    },
    ScenarioInfo {
        id: "return_lost_status_check",
        title: "No returnUrl, no notification → the status check settles",
        spec: S04,
        rule: "Fallback: If you do not receive a notification for a certain period, please use the Check Payment Status API to verify the transaction status.",
        done: "One order paid whose shopper never returns and whose notification is refused; one never paid. Orders expire after 1 s here; then the reconciler passes.",
        expected: "The status check finds the payment: that order ends paid; the unpaid one ends expired.",
    },
    ScenarioInfo {
        id: "cancel_webhook_full",
        title: "Full cancel, settled by the cancellation notification",
        spec: S05,
        rule: "You can receive the payment cancellation result at the notifyUrl specified during the cancellation request. Your server must be implemented to handle this notification as described below.",
        done: "The merchant signs in and cancels a paid order from the dashboard; afterwards KICC sends the notification again.",
        expected: "A revise (40) is sent; the notification is acked 0000 and the order ends cancelled; the repeat is acked and changes nothing.",
    },
    ScenarioInfo {
        id: "cancel_webhook_partial",
        title: "Partial cancel, counted once",
        spec: S06,
        rule: "`reviseTypeCode` (`\"40\"` full, `\"32\"` partial) ... `totAmount` required for partial ... Submitting only *requests* the cancel: the final result arrives by the cancellation webhook.",
        done: "The merchant cancels half of a paid order from the dashboard; KICC sends the notification twice.",
        expected: "A revise 32 with totAmount = half; the order is partially cancelled by exactly half; KICC's trade TS06 with the other half remaining.",
    },
    ScenarioInfo {
        id: "cancel_retry_original_date",
        title: "A failed cancel is retried with a new key and the original date",
        spec: S06,
        rule: "`cancelReqDate` (yyyyMMdd — on a retry send the original date)",
        done: "A cancel is needed (the database refused to mark the order paid) and KICC refuses the first two cancels; the reconciler retries.",
        expected: "At least 3 revise calls, each with its own shopTransactionId and the same cancelReqDate; the order ends cancelled, KICC's trade TS02.",
    },
    ScenarioInfo {
        id: "cancel_reply_lost_status_first",
        title: "A cancel's reply is lost → status check before any retry",
        spec: S06,
        rule: "after a timeout, do not retry blindly: check status first (`retrieveTransaction` or `wechatpay/find`), then decide.",
        done: "A cancel is needed; KICC makes it but the reply never arrives (and the cancellation notification is refused here); the reconciler takes over.",
        expected: "The reconciler checks the status, finds the trade cancelled and sends no second cancel; the order ends cancelled.",
    },
    ScenarioInfo {
        id: "shopper_cancelled",
        title: "The shopper cancels on KICC's page",
        spec: S06,
        rule: "`resCd` other than `0000` means the shopper cancelled or authentication failed.",
        done: "The shopper presses Cancel on the WeChat page; the browser comes back with resCd W002.",
        expected: "No approval is requested; the return is checked with KICC (one status check), which shows the trade unpaid, so the order stays pending — the shopper may still pay — until it expires; KICC's trade stays unpaid.",
    },
    ScenarioInfo {
        id: "forged_return",
        title: "A forged returnUrl cannot mark an order paid",
        spec: S06,
        rule: "The returnUrl is the shopper's browser, not KICC: never trust it for amounts or status",
        done: "Someone posts resCd 0000 with a made-up authorizationId (and an amount of 1) to the returnUrl of a pending order; and a returnUrl for an order that does not exist.",
        expected: "KICC refuses the approval; the order is not paid; KICC's trade is not approved; the unknown order gets a 404 page.",
    },
    ScenarioInfo {
        id: "webhook_source_ip",
        title: "Notifications from outside KICC's IPs are refused",
        spec: S01,
        rule: "notifyUrl ... Webhook URL for Payment Completion Must whitelist KICC IPs (Inbound)",
        done: "A well-formed approval notification arrives from 198.51.100.23 (through the trusted proxy); then the real payment and KICC's notification.",
        expected: "The stranger gets 403 with a KICC-shaped answer, is stored as rejected and changes nothing; KICC's own notification is applied; the order ends paid.",
    },
    ScenarioInfo {
        id: "late_payment_accepted",
        title: "A payment after the order expired is kept (LATE_PAYMENTS=accept)",
        spec: S06,
        rule: "the approval response, the webhook and the status check are the sources of truth.",
        done: "A WeChat order expires (the reconciler finds nothing paid); then the shopper scans the still-valid code and pays, and KICC approves and notifies.",
        expected: "The notification is confirmed by the status check and the order becomes paid (late_payment_accepted on the timeline); KICC holds the payment (TS01): money and order agree.",
    },
    ScenarioInfo {
        id: "late_payment_refunded",
        title: "A payment after expiry, its notification lost, is refunded (LATE_PAYMENTS=refund)",
        spec: S04,
        rule: "Fallback: If you do not receive a notification for a certain period, please use the Check Payment Status API to verify the transaction status.",
        done: "On the fallback instance (notifications refused, late payments refunded) an order expires; the shopper pays afterwards and KICC approves; the reconciler's late check of the closed order comes due.",
        expected: "The late check finds the approval and refunds it: late_refund_started, the cancel confirmed, the order cancelled; KICC holds nothing (TS02); the shopper's page says the payment arrived after the order expired and was refunded.",
    },
    ScenarioInfo {
        id: "forged_failure_return",
        title: "A forged failure return cannot close an order",
        spec: S06,
        rule: "The returnUrl is the shopper's browser, not KICC: never trust it for amounts or status",
        done: "A stranger with no cookie posts resCd W002 to the returnUrl of a pending order; then the real shopper pays.",
        expected: "The order stays pending (one status check, KICC shows it unpaid); the shopper's payment then makes it paid; KICC holds it (TS01).",
    },
    ScenarioInfo {
        id: "unconfirmed_cancel_notification",
        title: "A cancellation notification KICC does not confirm changes nothing",
        spec: S05,
        rule: "Fallback: If you do not receive a notification for a certain period, please use the Check Cancellation Status API to verify the transaction status.",
        done: "From KICC's address, two cancellation notifications for a paid order that KICC never cancelled: half the amount (plausible), and 1,000,000,000.",
        expected: "Both acked 0000 and kept as unmatched: the large one at once, the plausible one after the cancellation status check finds no such cancel; the order stays paid with nothing cancelled; KICC still holds the payment (TS01).",
    },
    ScenarioInfo {
        id: "forwarded_for_two_lines",
        title: "A forged X-Forwarded-For line does not pass the allowlist",
        spec: S01,
        rule: "notifyUrl ... Webhook URL for Payment Completion Must whitelist KICC IPs (Inbound)",
        done: "An approval notification through the trusted proxy with two X-Forwarded-For header lines: the stranger's own, naming KICC's address, then the one the proxy appended (198.51.100.23).",
        expected: "Every header line counts: the client is the stranger, answered 403 (9403), stored as refused; the order stays pending.",
    },
    ScenarioInfo {
        id: "idempotency_keys",
        title: "Idempotency keys are never reused",
        spec: S06,
        rule: "`shopTransactionId` must be unique per request (a UUID is suggested) and stays valid until midnight of the request day.",
        done: "Reads every gateway call this review made (recorded before it was sent).",
        expected: "As many different shopTransactionIds as calls, each at most 60 bytes; KICC never answered a duplicate-request error.",
    },
    ScenarioInfo {
        id: "webhook_ack_10s",
        title: "Every notification answered within 10 seconds",
        spec: S04,
        rule: "Timeout: Your server must respond to the notification within 10 seconds.",
        done: "Reads the answer time of every notification attempt KICC made during this review, as KICC measured it.",
        expected: "Every attempt that reached the app was answered, the slowest in under 10 s (the maximum is printed).",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule is quoted word for word from the file it names (KICC's pages as the project
    /// keeps them, `docs/kicc-spec/`): a quote that drifts from its page fails here, on every
    /// clone.
    #[test]
    fn every_rule_is_quoted_from_its_spec_file() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kicc-spec");
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        for s in SCENARIOS {
            let text = squash(&std::fs::read_to_string(folder.join(s.spec)).unwrap());
            for part in s.rule.split(" ... ") {
                let part = squash(part.trim_end_matches(" |"));
                assert!(
                    text.contains(&part),
                    "{}: `{part}` is not in {}",
                    s.id,
                    s.spec
                );
            }
        }
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = SCENARIOS.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SCENARIOS.len());
    }
}
