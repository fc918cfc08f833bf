//! Property tests ("fuzzing", proptest) of what parses bytes from KICC: the notification body
//! parser, the reply parsers (every reply type, through the same `interpret` the client uses,
//! with the approval's real msgAuthValue check), and the redaction of stored bodies. Inputs
//! start from the spec's example bodies (`tests/fixtures/spec`) and are mutated (byte flips,
//! truncation, insertions, a field's value swapped for another type, a huge or odd number,
//! unicode, deep nesting), or are arbitrary bytes. Properties: nothing panics, and valid
//! bodies still parse to what they say. The mutators are shared with the returnUrl suite
//! (`checkout::approval`). Case count: `PROPTEST_CASES` (256 by default); `docs/RELIABILITY.md`
//! has the long runs.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::client::{RawReply, interpret, verified_approval};
use super::webhook::{Notification, ack_body, parse_ack, parse_notification};
use super::{Outcome, crypto, redact, wire};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/spec/", $name))
    };
}

/// The spec's notification examples (04, 05).
const NOTIFICATION_SEEDS: &[&str] = &[
    fixture!("04-notification-from-table.json"),
    fixture!("05-notification-from-table.json"),
];

/// The spec's reply examples (01, 02, 03) and the acks (04, 05).
const REPLY_SEEDS: &[&str] = &[
    fixture!("01-create-response.json"),
    fixture!("02-approval-response.json"),
    fixture!("03-reqaprv-response.json"),
    fixture!("04-ack-success.json"),
    fixture!("05-ack-failure.json"),
];

/// A byte-level edit; positions wrap around the input's length.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bits)| Edit::Flip(at, bits.max(1))),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Edit::Remove(at, n)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Repeat(at, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Flip(i, bits) if len > 0 => bytes[at(*i)] ^= bits,
            Edit::Flip(..) => {}
            Edit::Truncate(i) => bytes.truncate(at(*i)),
            Edit::Insert(i, more) => {
                let i = at(*i);
                bytes.splice(i..i, more.iter().copied());
            }
            Edit::Remove(i, n) => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(len));
            }
            Edit::Repeat(i, n) => {
                let i = at(*i);
                let piece = bytes[i..(i + n).min(len)].to_vec();
                bytes.splice(i..i, piece);
            }
        }
    }
    bytes
}

/// JSON text that a `serde_json::Value` cannot hold or that tests number and string handling.
const ODD_TOKENS: &[&str] = &[
    "1e400",
    "-1e400",
    "1.5",
    "-0",
    "00012",
    "12000.000",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "123456789012345678901234567890",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\" 12000 \"",
    "\"+12000\"",
    "\"1e3\"",
    "\"-5\"",
    "\"\"",
    "NaN",
    "Infinity",
    "true",
    "null",
    "[]",
    "{}",
];

/// A hostile replacement for one value: another type, an odd number, unicode, nesting.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(ODD_TOKENS).prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| Value::from(f).to_string()),
        "\\PC{0,40}".prop_map(|s| Value::String(s).to_string()),
        "[0-9 ]{0,45}".prop_map(|s| Value::String(s).to_string()),
        (1usize..300).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        prop::collection::vec(any::<i32>(), 0..4).prop_map(|v| json!(v).to_string()),
        ("\\PC{0,10}", any::<i64>()).prop_map(|(currency, amount)| {
            json!({"currency": currency, "amount": amount}).to_string()
        }),
    ]
}

/// A field-level edit of a JSON object.
#[derive(Debug, Clone)]
pub(crate) enum FieldEdit {
    Replace(usize, String),
    /// The value of a field inside `amountInfo` (or any nested object).
    ReplaceNested(usize, usize, String),
    Remove(usize),
    Add(String, String),
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        3 => (any::<usize>(), hostile_value()).prop_map(|(i, v)| FieldEdit::Replace(i, v)),
        2 => (any::<usize>(), any::<usize>(), hostile_value())
            .prop_map(|(i, j, v)| FieldEdit::ReplaceNested(i, j, v)),
        1 => any::<usize>().prop_map(FieldEdit::Remove),
        1 => ("\\PC{0,12}", hostile_value()).prop_map(|(k, v)| FieldEdit::Add(k, v)),
    ]
}

/// Writes `object` with one field edited; values are kept as raw JSON text so the edit can put
/// in what a `Value` could not hold (`1e400`, a lone surrogate escape).
fn apply_field_edit(seed: &str, edit: &FieldEdit) -> Vec<u8> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(seed) else {
        return seed.as_bytes().to_vec();
    };
    let mut fields: Vec<(String, String)> = object
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let n = fields.len().max(1);
    match edit {
        FieldEdit::Replace(i, value) if !fields.is_empty() => fields[i % n].1 = value.clone(),
        FieldEdit::ReplaceNested(i, j, value) => {
            let nested: Vec<usize> = (0..fields.len())
                .filter(|k| object[&fields[*k].0].is_object())
                .collect();
            if let Some(&k) = nested.get(i % nested.len().max(1)) {
                let inner: &Map<String, Value> = object[&fields[k].0].as_object().expect("object");
                let keys: Vec<&String> = inner.keys().collect();
                if !keys.is_empty() {
                    let target = keys[j % keys.len()];
                    let body: Vec<String> = inner
                        .iter()
                        .map(|(key, v)| {
                            let text = if key == target {
                                value.clone()
                            } else {
                                v.to_string()
                            };
                            format!("{}:{text}", Value::String(key.clone()))
                        })
                        .collect();
                    fields[k].1 = format!("{{{}}}", body.join(","));
                }
            }
        }
        FieldEdit::Remove(i) if !fields.is_empty() => {
            fields.remove(i % n);
        }
        FieldEdit::Add(key, value) => fields.push((key.clone(), value.clone())),
        _ => {}
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", body.join(",")).into_bytes()
}

/// Hostile inputs grown from `seeds`: byte edits, field edits, both, or arbitrary bytes/text.
pub(crate) fn hostile_bytes(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        1 => "\\PC{0,200}".prop_map(String::into_bytes),
        1 => (0..n).prop_map(move |i| seeds[i].as_bytes().to_vec()),
        3 => (0..n, prop::collection::vec(edit(), 1..6))
            .prop_map(move |(i, edits)| apply(seeds[i].as_bytes().to_vec(), &edits)),
        3 => (0..n, prop::collection::vec(field_edit(), 1..4)).prop_map(move |(i, edits)| {
            edits.iter().fold(seeds[i].as_bytes().to_vec(), |body, e| {
                apply_field_edit(&String::from_utf8_lossy(&body), e)
            })
        }),
        2 => (0..n, field_edit(), prop::collection::vec(edit(), 1..3))
            .prop_map(move |(i, e, edits)| apply(apply_field_edit(seeds[i], &e), &edits)),
    ]
}

/// Byte edits of arbitrary seeds (for inputs that are not JSON, e.g. form bodies).
pub(crate) fn edited(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        1 => "\\PC{0,200}".prop_map(String::into_bytes),
        3 => (0..n, prop::collection::vec(edit(), 1..6))
            .prop_map(move |(i, edits)| apply(seeds[i].as_bytes().to_vec(), &edits)),
    ]
}

/// An amount as KICC may send it: a number, or digits in a string (spec 02's example).
fn amount_json() -> impl Strategy<Value = (i64, String)> {
    prop_oneof![
        any::<i64>().prop_map(|n| (n, n.to_string())),
        (0i64..=i64::MAX, "[ ]{0,2}", "[ ]{0,2}")
            .prop_map(|(n, a, b)| (n, Value::String(format!("{a}{n}{b}")).to_string())),
    ]
}

/// Any valid JSON value of a field KICC may add (unknown fields are ignored).
fn valid_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_owned()),
        "\\PC{0,40}".prop_map(|s| Value::String(s).to_string()),
        prop::collection::vec(any::<i32>(), 0..4).prop_map(|v| json!(v).to_string()),
        ("\\PC{0,10}", any::<i64>()).prop_map(|(k, v)| json!({ k: v }).to_string()),
    ]
}

/// A non-blank identifier as KICC may send one (any unicode, not only spaces).
fn id() -> impl Strategy<Value = String> {
    "\\PC{0,30}[^\\s]\\PC{0,10}"
}

proptest! {
    #[test]
    fn notification_parser_never_panics(body in hostile_bytes(NOTIFICATION_SEEDS)) {
        if let Ok(n) = parse_notification(&body) {
            // What the route does next with a parsed notification: echo its pgCno in the ack.
            prop_assert!(!n.dedupe_key().trim().is_empty());
            let ack = ack_body("0000", "OK", n.pg_cno());
            let (code, _, pg_cno) = parse_ack(ack.as_bytes()).expect("our ack parses");
            prop_assert_eq!((code.as_str(), pg_cno.as_str()), ("0000", n.pg_cno()));
            let _ = n.kind();
        }
    }

    #[test]
    fn valid_notifications_parse_to_what_they_say(
        pg_cno in id(),
        cancel_pg_cno in prop::option::of(id()),
        (amount, amount_text) in amount_json(),
        res_msg in "\\PC{0,40}",
        extra in prop::collection::btree_map("[a-z]{1,8}X", valid_value(), 0..3),
    ) {
        let mut body = format!(
            r#"{{"resCd":"0000","resMsg":{},"pgCno":{},"amountInfo":{{"currency":"KRW","amount":{amount_text}}}"#,
            Value::String(res_msg.clone()),
            Value::String(pg_cno.clone()),
        );
        if let Some(c) = &cancel_pg_cno {
            body.push_str(&format!(r#","cancelPgCno":{}"#, Value::String(c.clone())));
        }
        for (k, v) in &extra {
            body.push_str(&format!(",{}:{v}", Value::String(k.clone())));
        }
        body.push('}');
        let parsed = parse_notification(body.as_bytes());
        prop_assert!(parsed.is_ok(), "{body}: {parsed:?}");
        match parsed.unwrap() {
            Notification::Payment(p) => {
                prop_assert!(cancel_pg_cno.is_none());
                prop_assert_eq!(&p.pg_cno, &pg_cno);
                prop_assert_eq!(p.amount, Some(amount));
                prop_assert_eq!(&p.res_msg, &res_msg);
            }
            Notification::Cancel(c) => {
                prop_assert_eq!(Some(&c.cancel_pg_cno), cancel_pg_cno.as_ref());
                prop_assert_eq!(c.pg_cno.as_deref(), Some(pg_cno.as_str()));
                prop_assert_eq!(c.amount, Some(amount));
            }
        }
    }

    #[test]
    fn reply_parsers_never_panic(body in hostile_bytes(REPLY_SEEDS), status in prop_oneof![9 => Just(200u16), 1 => 100u16..600]) {
        let reply = RawReply::Body { status, bytes: body.clone() };
        // Every reply type, each through the client's own interpretation.
        let outcomes = [
            interpret(&reply, |r: wire::ApprovalResponse| verified_approval("sandbox-msgauth-key", r)).0.label(),
            interpret(&reply, |_: wire::CreateTransactionResponse| Outcome::Accepted(())).0.label(),
            interpret(&reply, |_: wire::WechatFindResponse| Outcome::Accepted(())).0.label(),
            interpret(&reply, |_: wire::WechatReviseResponse| Outcome::Accepted(())).0.label(),
            interpret(&reply, |_: wire::KiccPayResponse| Outcome::Accepted(())).0.label(),
        ];
        if status != 200 {
            prop_assert!(outcomes.iter().all(|l| *l == "transport_error"), "{outcomes:?}");
        }
        // What is stored of it: never a panic; a body that is not JSON is stored as a note.
        let stored = redact::redact_body(&body);
        if serde_json::from_slice::<Value>(&body).is_err() {
            prop_assert!(stored.starts_with("[not JSON"), "{stored}");
        }
    }

    #[test]
    fn a_valid_signed_approval_is_accepted_as_sent(
        pg_cno in id(),
        (amount, amount_text) in amount_json(),
        date in "20[0-9]{12}",
        tweak in prop::option::of(any::<u8>()),
    ) {
        let key = "sandbox-msgauth-key";
        let mut mac = crypto::msg_auth_value(key, &[&pg_cno, &amount.to_string(), &date]);
        if let Some(bits) = tweak {
            // One changed hex digit: never trusted.
            let digit = mac.remove(0);
            mac.insert(0, if digit == char::from(b'0' + bits % 10) { 'f' } else { char::from(b'0' + bits % 10) });
        }
        let body = format!(
            r#"{{"resCd":"0000","pgCno":{},"amount":{amount_text},"transactionDate":"{date}","msgAuthValue":"{mac}","unknownField":[1,{{"a":null}}]}}"#,
            Value::String(pg_cno.clone())
        );
        let reply = RawReply::Body { status: 200, bytes: body.into_bytes() };
        let (outcome, summary) = interpret(&reply, |r: wire::ApprovalResponse| verified_approval(key, r));
        prop_assert_eq!(summary.pg_cno.as_deref(), Some(pg_cno.as_str()));
        match outcome {
            Outcome::Accepted(a) => {
                prop_assert!(tweak.is_none());
                prop_assert_eq!((a.pg_cno, a.amount, a.transaction_date), (pg_cno, amount, date));
            }
            Outcome::IntegrityFailure { pg_cno: Some(p), .. } => {
                prop_assert!(tweak.is_some());
                prop_assert_eq!(p, pg_cno);
            }
            other => prop_assert!(false, "unexpected {}", other.label()),
        }
    }
}

#[test]
fn the_seeds_parse_as_the_spec_says() {
    for seed in NOTIFICATION_SEEDS {
        assert!(parse_notification(seed.as_bytes()).is_ok(), "{seed}");
    }
    let reply = RawReply::Body {
        status: 200,
        bytes: REPLY_SEEDS[1].as_bytes().to_vec(),
    };
    let (_, summary) = interpret(&reply, |_: wire::ApprovalResponse| Outcome::Accepted(()));
    assert_eq!(summary.res_cd.as_deref(), Some("0000"));
}
